//! A certificate authority made in a test (rcgen), and the certificates it issues: for members
//! (127.0.0.1 and localhost, server and client use) and for clients, named by common name.

use std::path::{Path, PathBuf};

/// A certificate authority made for one test.
pub struct Ca {
    key: rcgen::KeyPair,
    cert: rcgen::Certificate,
    /// Where its certificate is written.
    pub file: PathBuf,
}

impl Ca {
    /// A new CA named `name`, its certificate written to `dir/{name}.pem`.
    pub fn new(dir: &Path, name: &str) -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let file = dir.join(format!("{name}.pem"));
        std::fs::write(&file, cert.pem()).unwrap();
        Ca { key, cert, file }
    }

    /// A certificate with common name `cn`, for 127.0.0.1 and localhost, usable by servers
    /// and clients (as etcd's guides make member certificates), with serial `serial`; written
    /// to `dir/{file}.pem` and `dir/{file}-key.pem`.
    pub fn issue(&self, dir: &Path, file: &str, cn: &str, serial: u64) -> (PathBuf, PathBuf) {
        let mut params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                .unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        params.serial_number = Some(rcgen::SerialNumber::from(serial));
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        let (c, k) = (dir.join(format!("{file}.pem")), dir.join(format!("{file}-key.pem")));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }
}

/// `p` as a string (temporary directories are UTF-8).
pub fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}
