(function () {
  var xsrf = document.body.dataset.xsrf;
  function api(method, path, body) {
    var init = { method: method, credentials: 'same-origin', headers: { 'X-XSRFToken': xsrf } };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    return fetch('/hub/api' + path, init).then(function (response) {
      if (!response.ok && response.status !== 202) {
        return response.json().catch(function () { return {}; }).then(function (error) {
          throw new Error(error.message || ('HTTP ' + response.status));
        });
      }
      return response;
    });
  }
  function say(text) {
    var box = document.getElementById('message');
    box.textContent = text;
    box.className = 'error';
  }
  // Reload once the server is no longer on its way down (or up).
  function settle(userPath, server) {
    var tries = 0;
    (function poll() {
      api('GET', userPath).then(function (r) { return r.json(); }).then(function (user) {
        var s = (user.servers || {})[server];
        if ((!s || !s.pending) || ++tries > 600) { window.location.reload(); }
        else { setTimeout(poll, 250); }
      }).catch(function () { window.location.reload(); });
    })();
  }
  document.addEventListener('click', function (event) {
    var button = event.target.closest('[data-action]');
    if (!button) { return; }
    event.preventDefault();
    var d = button.dataset, userPath = '/users/' + encodeURIComponent(d.user);
    var serverPath = d.server ? userPath + '/servers/' + encodeURIComponent(d.server) : userPath + '/server';
    button.disabled = true;
    var done;
    switch (d.action) {
      case 'start': done = api('POST', serverPath, {}).then(function () { settle(userPath, d.server || ''); }); break;
      case 'stop': done = api('DELETE', serverPath).then(function () { settle(userPath, d.server || ''); }); break;
      case 'remove': done = api('DELETE', serverPath, { remove: true }).then(function () { settle(userPath, d.server); }); break;
      case 'delete-user':
        if (!window.confirm('Delete user ' + d.user + '?')) { button.disabled = false; return; }
        done = api('DELETE', userPath).then(function () { window.location.reload(); }); break;
      case 'add-server':
        var name = document.getElementById('new-server-name').value.trim();
        window.location.href = '/hub/spawn/' + encodeURIComponent(d.user) + '/' + encodeURIComponent(name);
        return;
      case 'add-users':
        var names = document.getElementById('new-users').value.split(/\s+/).filter(Boolean);
        var admin = document.getElementById('new-users-admin').checked;
        done = api('POST', '/users', { usernames: names, admin: admin }).then(function () { window.location.reload(); });
        break;
      default: return;
    }
    done.catch(function (error) { button.disabled = false; say(error.message); });
  });
})();
