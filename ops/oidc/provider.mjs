// Loopback OpenID Connect provider used as a test fixture (see README.md).
//
//   node provider.mjs --port <P> --issuer http://127.0.0.1:<P> \
//     --client-id <ID> --client-secret <SECRET> --redirect-uri <URI> [--redirect-uri <URI2> ...]
//
// `--port 0` (or no --port) with no --issuer picks a free port; the port is
// announced as the single stdout line `READY <port>`. Everything else goes to
// stderr. Exits on SIGTERM/SIGINT, and on stdin EOF with --exit-on-stdin-eof.

import * as crypto from 'node:crypto';
import * as http from 'node:http';
import * as querystring from 'node:querystring';
import { parseArgs } from 'node:util';

// oidc-provider prints notices with console.info/console.log. stdout is
// reserved for the single READY line, so route all console output to stderr.
console.log = console.error;
console.info = console.error;
console.warn = console.error;
console.debug = console.error;

const { Provider, errors } = await import('oidc-provider');

function die(msg) {
  process.stderr.write(`provider.mjs: ${msg}\n`);
  process.exit(2);
}

let args;
try {
  ({ values: args } = parseArgs({
    options: {
      port: { type: 'string', default: '0' },
      host: { type: 'string', default: '127.0.0.1' },
      issuer: { type: 'string' },
      'client-id': { type: 'string' },
      'client-secret': { type: 'string' },
      'redirect-uri': { type: 'string', multiple: true },
      'exit-on-stdin-eof': { type: 'boolean', default: false },
      verbose: { type: 'boolean', default: false },
    },
    strict: true,
  }));
} catch (e) {
  die(e.message);
}

for (const required of ['client-id', 'client-secret', 'redirect-uri']) {
  if (!args[required]) die(`--${required} is required`);
}
const port = Number(args.port);
if (!Number.isInteger(port) || port < 0 || port > 65535) die(`bad --port ${args.port}`);
if (port === 0 && args.issuer) die('--issuer needs an explicit --port');
const verbose = args.verbose || process.env.OIDC_FIXTURE_VERBOSE === '1';

// ---------------------------------------------------------------------------
// Accounts. alice and bob deliberately share an email address.
// ---------------------------------------------------------------------------
const USERS = [
  {
    login: 'alice',
    password: 'alice-pw',
    sub: 'sub-alice-0001',
    claims: {
      name: 'Alice Example',
      preferred_username: 'alice',
      email: 'shared@example.org',
      email_verified: true,
      groups: ['staff'],
    },
  },
  {
    login: 'bob',
    password: 'bob-pw',
    sub: 'sub-bob-0002',
    claims: {
      name: 'Bob Example',
      preferred_username: 'bob',
      email: 'shared@example.org',
      email_verified: true,
      groups: ['students'],
    },
  },
];
const BY_LOGIN = new Map(USERS.map((u) => [u.login, u]));
const BY_SUB = new Map(USERS.map((u) => [u.sub, u]));

function passwordMatches(user, given) {
  const a = crypto.createHash('sha256').update(user.password).digest();
  const b = crypto.createHash('sha256').update(String(given)).digest();
  return crypto.timingSafeEqual(a, b);
}

// ---------------------------------------------------------------------------
// Keys: a fresh RS256 signing key and cookie-signing key per process.
// ---------------------------------------------------------------------------
function signingJwks() {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  return {
    keys: [{ ...jwk, kid: `fixture-${crypto.randomBytes(6).toString('hex')}`, alg: 'RS256', use: 'sig' }],
  };
}

const esc = (s) => String(s)
  .replace(/&/g, '&amp;')
  .replace(/</g, '&lt;')
  .replace(/>/g, '&gt;')
  .replace(/"/g, '&quot;')
  .replace(/'/g, '&#39;');

function page(title, body) {
  return `<!DOCTYPE html>
<html>
<head><meta charset="utf-8"><title>${esc(title)}</title></head>
<body>
${body}
</body>
</html>
`;
}

function loginForm(uid, { error, login } = {}) {
  return page('Sign-in', `<h1>Sign-in</h1>
${error ? `<p id="error" class="error">${esc(error)}</p>\n` : ''}<form method="post" action="/interaction/${esc(uid)}">
  <label>Username <input type="text" name="login" value="${esc(login ?? '')}" autofocus></label>
  <label>Password <input type="password" name="password"></label>
  <button type="submit">Sign-in</button>
</form>`);
}

function send(res, status, html) {
  res.statusCode = status;
  res.setHeader('Content-Type', 'text/html; charset=utf-8');
  res.setHeader('Cache-Control', 'no-store');
  res.end(html);
}

function readForm(req, limit = 64 * 1024) {
  return new Promise((resolve, reject) => {
    let size = 0;
    const chunks = [];
    req.on('data', (c) => {
      size += c.length;
      if (size > limit) {
        reject(new Error('body too large'));
        req.destroy();
      } else {
        chunks.push(c);
      }
    });
    req.on('end', () => resolve(querystring.parse(Buffer.concat(chunks).toString('utf8'))));
    req.on('error', reject);
  });
}

// ---------------------------------------------------------------------------
// Provider
// ---------------------------------------------------------------------------
function buildProvider(issuer) {
  const configuration = {
    clients: [{
      client_id: args['client-id'],
      client_secret: args['client-secret'],
      // client_secret_basic is registered; oidc-provider accepts
      // client_secret_post for the same client as well.
      token_endpoint_auth_method: 'client_secret_basic',
      grant_types: ['authorization_code'],
      response_types: ['code'],
      redirect_uris: args['redirect-uri'],
      id_token_signed_response_alg: 'RS256',
    }],
    jwks: signingJwks(),
    cookies: {
      // No `secure` flag: oidc-provider only sets it when the request is
      // https, so the cookies work over http://127.0.0.1. SameSite=Lax for
      // both kinds (8.x defaults the session cookie to SameSite=None, which
      // browsers drop without Secure, plus a `.legacy` twin).
      keys: [crypto.randomBytes(32).toString('hex')],
      long: { httpOnly: true, sameSite: 'lax', signed: true },
      short: { httpOnly: true, sameSite: 'lax', signed: true },
    },
    claims: {
      acr: null,
      sid: null,
      auth_time: null,
      iss: null,
      openid: ['sub'],
      profile: ['name', 'preferred_username'],
      email: ['email', 'email_verified'],
      groups: ['groups'],
    },
    // Put the scope-granted claims into the ID token as well as userinfo.
    conformIdTokenClaims: false,
    pkce: { required: () => true },
    features: {
      devInteractions: { enabled: false },
      userinfo: { enabled: true },
      introspection: { enabled: true },
      revocation: { enabled: true },
    },
    interactions: {
      url: (ctx, interaction) => new URL(`/interaction/${interaction.uid}`, issuer).href,
    },
    async findAccount(ctx, sub) {
      const user = BY_SUB.get(sub);
      if (!user) return undefined;
      return {
        accountId: sub,
        async claims() {
          return { sub, ...user.claims };
        },
      };
    },
    // Auto-consent: every requested OIDC scope/claim is granted once the user
    // has logged in, so no consent page is ever shown.
    async loadExistingGrant(ctx) {
      const { oidc } = ctx;
      const { Grant } = oidc.provider;
      const grantId = oidc.result?.consent?.grantId || oidc.session.grantIdFor(oidc.client.clientId);
      let grant = grantId ? await Grant.find(grantId) : undefined;
      if (!grant || grant.accountId !== oidc.session.accountId) {
        grant = new Grant({ clientId: oidc.client.clientId, accountId: oidc.session.accountId });
      }
      const scopes = [...oidc.requestParamOIDCScopes];
      if (scopes.length) grant.addOIDCScope(scopes.join(' '));
      const claims = [...oidc.requestParamClaims];
      if (claims.length) grant.addOIDCClaims(claims);
      await grant.save();
      return grant;
    },
    clientBasedCORS: () => false,
    async renderError(ctx, out) {
      ctx.type = 'html';
      ctx.body = page('error', `<h1>error</h1>\n${Object.entries(out)
        .map(([k, v]) => `<pre>${esc(k)}: ${esc(v)}</pre>`).join('\n')}`);
    },
    ttl: {
      AccessToken: 3600,
      AuthorizationCode: 120,
      IdToken: 3600,
      Interaction: 3600,
      Session: 86400,
      Grant: 86400,
      RefreshToken: 86400,
      ClientCredentials: 600,
      DeviceCode: 600,
      BackchannelAuthenticationRequest: 600,
      PreAuthorizedCode: 600,
    },
  };

  const provider = new Provider(issuer, configuration);
  for (const ev of ['server_error', 'authorization.error', 'grant.error', 'userinfo.error',
    'introspection.error', 'revocation.error', 'end_session.error', 'discovery.error', 'jwks.error']) {
    provider.on(ev, (...a) => {
      const err = a.find((x) => x instanceof Error);
      process.stderr.write(`provider.mjs: ${ev}: ${err ? `${err.name}: ${err.message}${err.error_description ? ` (${err.error_description})` : ''}` : ''}\n`);
    });
  }
  return provider;
}

// ---------------------------------------------------------------------------
// Interaction (login) endpoint: /interaction/<uid>
//   GET  -> HTML form (200)
//   POST -> login+password; good: 303 to /auth/<uid>; bad: form again, 401
// ---------------------------------------------------------------------------
async function handleInteraction(provider, uid, req, res) {
  let details;
  try {
    details = await provider.interactionDetails(req, res);
  } catch (e) {
    if (e instanceof errors.SessionNotFound) {
      send(res, 400, page('error', `<h1>error</h1>\n<pre>${esc(e.error_description || e.message)}</pre>`));
      return;
    }
    throw e;
  }
  if (details.uid !== uid) {
    send(res, 400, page('error', '<h1>error</h1>\n<pre>interaction uid mismatch</pre>'));
    return;
  }

  const { prompt } = details;
  if (prompt.name === 'consent') {
    // Normally unreachable (loadExistingGrant auto-grants); grant and continue.
    const { Grant } = provider;
    const grant = details.grantId
      ? await Grant.find(details.grantId)
      : new Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
    if (prompt.details.missingOIDCScope) grant.addOIDCScope(prompt.details.missingOIDCScope.join(' '));
    if (prompt.details.missingOIDCClaims) grant.addOIDCClaims(prompt.details.missingOIDCClaims);
    if (prompt.details.missingResourceScopes) {
      for (const [ind, sc] of Object.entries(prompt.details.missingResourceScopes)) {
        grant.addResourceScope(ind, sc.join(' '));
      }
    }
    await provider.interactionFinished(req, res, { consent: { grantId: await grant.save() } },
      { mergeWithLastSubmission: true });
    return;
  }
  if (prompt.name !== 'login') {
    send(res, 501, page('error', `<h1>error</h1>\n<pre>unsupported prompt ${esc(prompt.name)}</pre>`));
    return;
  }

  if (req.method === 'GET' || req.method === 'HEAD') {
    send(res, 200, loginForm(uid, { login: details.params.login_hint }));
    return;
  }
  if (req.method !== 'POST') {
    res.setHeader('Allow', 'GET, POST');
    send(res, 405, page('error', '<h1>method not allowed</h1>'));
    return;
  }

  const form = await readForm(req);
  const login = typeof form.login === 'string' ? form.login : '';
  const password = typeof form.password === 'string' ? form.password : '';
  const user = BY_LOGIN.get(login);
  if (!user || !passwordMatches(user, password)) {
    if (verbose) process.stderr.write(`provider.mjs: failed login for ${JSON.stringify(login)}\n`);
    send(res, 401, loginForm(uid, { error: 'Invalid username or password.', login }));
    return;
  }
  await provider.interactionFinished(req, res, {
    login: { accountId: user.sub, amr: ['pwd'], remember: false },
  }, { mergeWithLastSubmission: false });
}

// ---------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------
let provider;
let callback;
const INTERACTION = /^\/interaction\/([A-Za-z0-9_-]+)\/?$/;

const server = http.createServer((req, res) => {
  if (verbose) {
    res.on('finish', () => {
      const loc = res.getHeader('location');
      process.stderr.write(`provider.mjs: ${req.method} ${req.url} -> ${res.statusCode}${loc ? ` ${loc}` : ''}\n`);
    });
  }
  const path = req.url.split('?')[0];
  const m = INTERACTION.exec(path);
  if (!m) {
    callback(req, res);
    return;
  }
  handleInteraction(provider, m[1], req, res).catch((e) => {
    process.stderr.write(`provider.mjs: interaction error: ${e.stack || e}\n`);
    if (!res.headersSent) send(res, 500, page('error', '<h1>internal error</h1>'));
    else res.end();
  });
});

server.on('error', (e) => die(`listen failed: ${e.message}`));

server.listen(port, args.host, () => {
  const actualPort = server.address().port;
  const issuer = args.issuer ?? `http://${args.host}:${actualPort}`;
  try {
    const u = new URL(issuer);
    if (u.pathname !== '/' || u.search || u.hash) die('--issuer must not have a path, query or fragment');
  } catch (e) {
    die(`bad --issuer: ${e.message}`);
  }
  try {
    provider = buildProvider(issuer);
  } catch (e) {
    die(`configuration error: ${e.stack || e}`);
  }
  callback = provider.callback();
  process.stdout.write(`READY ${actualPort}\n`);
});

function shutdown() {
  server.close();
  server.closeAllConnections?.();
  process.exit(0);
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
if (args['exit-on-stdin-eof']) {
  process.stdin.on('end', shutdown);
  process.stdin.on('close', shutdown);
  process.stdin.resume();
}
