//! Certificates for Redis over TLS, made with `openssl`: a CA, a server
//! certificate for 127.0.0.1 and localhost, a client certificate (Redis's
//! default `tls-auth-clients yes` demands one), and an unrelated second CA.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::{Arc, Mutex, Weak},
};

use super::unique_dir;

/// PEM files in a directory of their own, removed with the last holder.
pub struct Certs {
    dir: PathBuf,
    /// The CA that signed the server and client certificates.
    pub ca: String,
    /// A valid CA that signed nothing here: trusting it must fail verification.
    pub other_ca: String,
    /// For 127.0.0.1 and localhost; good for client use too, because a Redis
    /// node presents it when it connects to another (replication, cluster bus,
    /// Sentinel).
    pub server_cert: String,
    pub server_key: String,
    pub client_cert: String,
    pub client_key: String,
    /// A text file without a PEM block.
    pub not_pem: String,
}

impl Certs {
    /// This test process's certificates. Made on first use and shared while
    /// anyone holds them (a server launched with them, a test), so a test that
    /// starts many TLS servers runs `openssl` once.
    pub fn get() -> Arc<Certs> {
        static SHARED: Mutex<Weak<Certs>> = Mutex::new(Weak::new());
        let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(certs) = shared.upgrade() {
            return certs;
        }
        let certs = Arc::new(Certs::generate());
        *shared = Arc::downgrade(&certs);
        certs
    }

    fn generate() -> Certs {
        let dir = unique_dir("tls");
        let path = |name: &str| dir.join(name).display().to_string();
        self_signed_ca(&dir, "ca");
        self_signed_ca(&dir, "other-ca");
        // Both usages: a node's certificate is also its client certificate
        // towards other nodes, which check it as one.
        signed_leaf(
            &dir,
            "server",
            "serverAuth,clientAuth",
            "IP:127.0.0.1,DNS:localhost",
        );
        signed_leaf(&dir, "client", "clientAuth", "DNS:wxsession-test-client");
        std::fs::write(dir.join("not-pem.txt"), "not a certificate\n").unwrap();
        Certs {
            ca: path("ca.crt"),
            other_ca: path("other-ca.crt"),
            server_cert: path("server.crt"),
            server_key: path("server.key"),
            client_cert: path("client.crt"),
            client_key: path("client.key"),
            not_pem: path("not-pem.txt"),
            dir,
        }
    }

    /// `redis.tls_*` for a server under test that trusts the CA and presents the
    /// client certificate, as `("section.key", path)`.
    pub fn client_keys(&self) -> [(&'static str, &str); 3] {
        [
            ("redis.tls_ca_file", &self.ca),
            ("redis.tls_cert_file", &self.client_cert),
            ("redis.tls_key_file", &self.client_key),
        ]
    }

    /// `redis-cli` flags for a verified TLS connection with the client certificate.
    pub fn cli_args(&self) -> [&str; 7] {
        [
            "--tls",
            "--cacert",
            &self.ca,
            "--cert",
            &self.client_cert,
            "--key",
            &self.client_key,
        ]
    }

    /// `redis-server` / `redis-sentinel` arguments for a TLS port `port`, the
    /// server certificate, and clients verified against the CA.
    pub fn server_args(&self, port: u16) -> Vec<String> {
        [
            "--tls-port",
            &port.to_string(),
            "--tls-cert-file",
            &self.server_cert,
            "--tls-key-file",
            &self.server_key,
            "--tls-ca-cert-file",
            &self.ca,
        ]
        .map(String::from)
        .to_vec()
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// EC P-256 keys: fast to make, and every TLS stack a Redis client may use
/// (OpenSSL, rustls) takes them.
const KEY: [&str; 4] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];

fn self_signed_ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            &["req", "-x509", "-new", "-nodes", "-days", "2"],
            &KEY[..],
            &[
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.crt"),
            ],
            &["-subj", &format!("/CN=wxsession test {name}")],
            &["-addext", "basicConstraints=critical,CA:TRUE"],
            &["-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        ],
    );
}

/// A certificate signed by `ca`, with the extensions strict verifiers (webpki)
/// insist on: not a CA, the usages, and the names in the SAN.
fn signed_leaf(dir: &Path, name: &str, usage: &str, san: &str) {
    let ext = format!("{name}.ext");
    std::fs::write(
        dir.join(&ext),
        format!(
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage={usage}\nsubjectAltName={san}\n"
        ),
    )
    .unwrap();
    let csr = format!("{name}.csr");
    openssl(
        dir,
        &[
            &["req", "-new", "-nodes"],
            &KEY[..],
            &["-keyout", &format!("{name}.key"), "-out", &csr],
            &["-subj", &format!("/CN=wxsession test {name}")],
        ],
    );
    openssl(
        dir,
        &[
            &["x509", "-req", "-in", &csr, "-days", "2"],
            &["-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial"],
            &["-out", &format!("{name}.crt"), "-extfile", &ext],
        ],
    );
}

/// Runs `openssl` in `dir` with `args` (concatenated), which must succeed.
pub(super) fn openssl(dir: &Path, args: &[&[&str]]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args.concat())
        .output()
        .expect("openssl must be installed");
    assert!(
        out.status.success(),
        "openssl {:?}: {}",
        args.concat(),
        String::from_utf8_lossy(&out.stderr)
    );
}
