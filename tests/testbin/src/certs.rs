//! The certificates a control plane needs, made with rcgen: one CA that signs the API server's
//! serving certificate and every client certificate (admin and the users of RBAC tests), and the
//! service-account signing key pair.

use std::{fs, io, path::Path};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// A CA whose key stays in memory, so tests can mint client certificates for any user.
pub struct Authority {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A PEM certificate and its PEM private key.
pub struct Pair {
    pub cert: String,
    pub key: String,
}

pub type CertError = rcgen::Error;

impl Authority {
    pub fn new() -> Result<Self, CertError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, "modelgate-test-ca");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        Ok(Self { issuer })
    }

    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// The API server's serving certificate, valid for the loopback names it is dialled by.
    pub fn serving(&self) -> Result<Pair, CertError> {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
        params
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params)
    }

    /// A client certificate: the API server reads the user from CN and the groups from O.
    pub fn client(&self, user: &str, groups: &[&str]) -> Result<Pair, CertError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, user);
        for group in groups {
            params
                .distinguished_name
                .push(DnType::OrganizationName, *group);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    fn sign(&self, params: CertificateParams) -> Result<Pair, CertError> {
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Pair {
            cert: cert.pem(),
            key: key.serialize_pem(),
        })
    }
}

/// Writes the files kube-apiserver reads from `--cert-dir` and its flags.
pub fn write_server_files(authority: &Authority, dir: &Path) -> io::Result<()> {
    let serving = authority.serving().map_err(io::Error::other)?;
    fs::write(dir.join("apiserver.crt"), serving.cert)?;
    fs::write(dir.join("apiserver.key"), serving.key)?;
    fs::write(dir.join("ca.crt"), authority.cert_pem())?;
    let service_accounts = KeyPair::generate().map_err(io::Error::other)?;
    fs::write(dir.join("sa.key"), service_accounts.serialize_pem())?;
    fs::write(dir.join("sa.pub"), service_accounts.public_key_pem())?;
    Ok(())
}
