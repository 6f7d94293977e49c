//! What the `[redis]` keys mean together: the addresses in `url` (one node, a
//! Cluster's seed nodes, or Sentinels), and the TLS material its files hold.
//! Checked at start, so a URL or file that cannot work stops the start naming
//! its key instead of failing on the first connection.

use redis::{ClientTlsConfig, IntoConnectionInfo, TlsCertificates};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};

use super::{ConfigError, RedisConfig};

const URL_SHAPE: &str = "redis[s]://[user:password@]host:port[/db]";

impl RedisConfig {
    /// The addresses listed in `url`, comma-separated.
    pub fn addresses(&self) -> Vec<&str> {
        self.url
            .expose()
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .collect()
    }

    /// The first address in `url`, parsed: the node, the Cluster seed or the
    /// Sentinel whose user, password and db the connections use.
    pub fn first_address(&self) -> Result<redis::ConnectionInfo, redis::RedisError> {
        self.addresses()
            .first()
            .copied()
            .unwrap_or_default()
            .into_connection_info()
    }

    /// Whether `url` asks for TLS (`rediss://`).
    pub fn uses_tls(&self) -> bool {
        self.addresses().iter().any(|a| a.starts_with("rediss://"))
    }

    /// The certificates for `rediss://` connections from `tls_*_file`; `None`
    /// trusts the system roots and presents no client certificate.
    pub fn tls_certificates(&self) -> Result<Option<TlsCertificates>, ConfigError> {
        let root_cert = match &self.tls_ca_file {
            Some(path) => Some(read_certificates("redis.tls_ca_file", path)?),
            None => None,
        };
        let client_tls = match (&self.tls_cert_file, &self.tls_key_file) {
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "redis.tls_key_file",
                    "is required with redis.tls_cert_file (the client certificate's key)",
                ))
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "redis.tls_cert_file",
                    "is required with redis.tls_key_file",
                ))
            }
            (Some(cert), Some(key)) => Some(ClientTlsConfig {
                client_cert: read_certificates("redis.tls_cert_file", cert)?,
                client_key: read_private_key("redis.tls_key_file", key)?,
            }),
        };
        Ok(
            (root_cert.is_some() || client_tls.is_some()).then_some(TlsCertificates {
                client_tls,
                root_cert,
            }),
        )
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let fail = |key: &str, message: &str| Err(ConfigError::new(key, message));
        let addresses = self.addresses();
        if addresses.is_empty() {
            return fail("redis.url", &format!("is empty (expected {URL_SHAPE})"));
        }
        for address in &addresses {
            if !["redis://", "rediss://", "unix://", "redis+unix://"]
                .iter()
                .any(|scheme| address.starts_with(scheme))
            {
                return fail("redis.url", "expected a redis:// or rediss:// URL");
            }
            // The parser's own message could echo the URL, password included.
            if address.into_connection_info().is_err() {
                return fail("redis.url", &format!("cannot be read as {URL_SHAPE}"));
            }
        }
        if addresses.len() > 1 && !self.cluster && self.sentinel_master.is_none() {
            return fail(
                "redis.url",
                "lists several addresses: set redis.cluster = true (Cluster nodes) or \
                 redis.sentinel_master (Sentinels)",
            );
        }
        if self.uses_tls() && !addresses.iter().all(|a| a.starts_with("rediss://")) {
            return fail("redis.url", "mixes redis:// and rediss:// addresses");
        }
        if self.sentinel_master.is_some() {
            if self.cluster {
                return fail("redis.sentinel_master", "cannot be used with redis.cluster");
            }
            if addresses.iter().any(|a| a.contains("unix://")) {
                return fail(
                    "redis.url",
                    "Sentinels are reached over TCP (redis:// or rediss://)",
                );
            }
        }
        if self.timeout_ms == 0 {
            return fail("redis.timeout_ms", "must be at least 1");
        }
        if self.tls_certificates()?.is_some() && !self.uses_tls() {
            let key = if self.tls_ca_file.is_some() {
                "redis.tls_ca_file"
            } else {
                "redis.tls_cert_file"
            };
            return fail(key, "needs a rediss:// redis.url (the files are for TLS)");
        }
        Ok(())
    }
}

fn read(key: &str, path: &str) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| ConfigError::new(key, format!("cannot read {path}: {e}")))
}

/// The file's bytes, once it is known to hold at least one PEM certificate.
fn read_certificates(key: &str, path: &str) -> Result<Vec<u8>, ConfigError> {
    let pem = read(key, path)?;
    match CertificateDer::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>() {
        Ok(certificates) if !certificates.is_empty() => Ok(pem),
        _ => Err(ConfigError::new(
            key,
            format!("{path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"),
        )),
    }
}

/// The file's bytes, once it is known to hold a PEM private key.
fn read_private_key(key: &str, path: &str) -> Result<Vec<u8>, ConfigError> {
    let pem = read(key, path)?;
    match PrivateKeyDer::from_pem_slice(&pem) {
        Ok(_) => Ok(pem),
        Err(_) => Err(ConfigError::new(
            key,
            format!("{path} holds no PEM private key"),
        )),
    }
}
