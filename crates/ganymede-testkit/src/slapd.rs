//! A real OpenLDAP server (Debian's `slapd`) for authenticator tests: a private
//! configuration and database in a temporary directory, seeded offline with `slapadd`,
//! listening on a free loopback port. Stopped (by its PID) when dropped.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const SUFFIX: &str = "dc=example,dc=org";
pub const ROOT_DN: &str = "cn=admin,dc=example,dc=org";
pub const ROOT_PASSWORD: &str = "slapd-root-password";

pub struct Slapd {
    pub url: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Slapd {
    /// Starts slapd with the entries of `ldif` (the suffix entry is added first).
    pub async fn start(ldif: &str) -> Slapd {
        for tool in ["/usr/sbin/slapd", "/usr/sbin/slapadd"] {
            assert!(
                Path::new(tool).is_file(),
                "{tool} is missing: run ops/setup.sh (it installs Debian's slapd)"
            );
        }
        let dir = tempfile::tempdir().expect("slapd dir");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("data dir");
        let config = dir.path().join("slapd.conf");
        std::fs::write(
            &config,
            format!(
                "include /etc/ldap/schema/core.schema\n\
                 include /etc/ldap/schema/cosine.schema\n\
                 include /etc/ldap/schema/inetorgperson.schema\n\
                 include /etc/ldap/schema/nis.schema\n\
                 modulepath /usr/lib/ldap\nmoduleload back_mdb\n\
                 pidfile {pid}\n\
                 database mdb\nmaxsize 10485760\n\
                 suffix \"{SUFFIX}\"\nrootdn \"{ROOT_DN}\"\nrootpw {ROOT_PASSWORD}\n\
                 directory {data}\n",
                pid = dir.path().join("slapd.pid").display(),
                data = data.display(),
            ),
        )
        .expect("slapd.conf");
        let seed = dir.path().join("seed.ldif");
        std::fs::write(
            &seed,
            format!(
                "dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\no: Example\ndc: example\n\n{ldif}"
            ),
        )
        .expect("seed");
        let loaded = Command::new("/usr/sbin/slapadd")
            .arg("-f")
            .arg(&config)
            .arg("-l")
            .arg(&seed)
            .output()
            .expect("slapadd runs");
        assert!(
            loaded.status.success(),
            "slapadd: {}",
            String::from_utf8_lossy(&loaded.stderr)
        );
        let port = crate::process::free_port();
        let url = format!("ldap://127.0.0.1:{port}");
        let child = Command::new("/usr/sbin/slapd")
            .arg("-f")
            .arg(&config)
            .arg("-h")
            .arg(format!("{url}/"))
            // Stay in the foreground (and so our child), logging nothing.
            .args(["-d", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("slapd starts");
        crate::eventually("slapd listens", Duration::from_secs(30), || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(|_| ())
        })
        .await;
        Slapd { url, child, _dir: dir }
    }

    /// Stops the server now (to test a directory that is down).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}
