//! `ganymede certs`: a cluster CA and certificates signed by it (rcgen), for TLS on the
//! edges and between hubs and edges. The CA is created once in the output directory and
//! reused; private keys are written `0600`.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

#[derive(clap::Args)]
pub struct CertsArgs {
    /// Where the CA (`ca.pem`, `ca-key.pem`) and the new certificate go.
    #[arg(long, default_value = "certs")]
    pub out: PathBuf,
    /// The file name stem of the new certificate: `<name>.pem`, `<name>-key.pem`.
    #[arg(long, default_value = "edge")]
    pub name: String,
    /// Host names and IP addresses the certificate is valid for, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "localhost,127.0.0.1")]
    pub hosts: Vec<String>,
}

/// The CA's parameters; the same every time, so that a CA loaded from its key signs
/// exactly as the one first generated.
fn ca_params() -> anyhow::Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "Ganymede cluster CA");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(params)
}

fn write(path: &Path, contents: &str, private: bool) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    if private {
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    Ok(())
}

pub fn run(args: CertsArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        !args.name.is_empty() && !args.name.contains(['/', '.']),
        "--name must be a plain file name stem"
    );
    anyhow::ensure!(!args.hosts.is_empty(), "--hosts must name at least one host");
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let ca_cert_path = args.out.join("ca.pem");
    let ca_key_path = args.out.join("ca-key.pem");
    let ca_key = if ca_key_path.exists() {
        let pem = std::fs::read_to_string(&ca_key_path)?;
        KeyPair::from_pem(&pem).with_context(|| format!("{} is not a private key", ca_key_path.display()))?
    } else {
        let key = KeyPair::generate()?;
        let cert = ca_params()?.self_signed(&key)?;
        write(&ca_key_path, &key.serialize_pem(), true)?;
        write(&ca_cert_path, &cert.pem(), false)?;
        crate::out!("created the cluster CA: {}", ca_cert_path.display());
        key
    };
    let issuer = Issuer::new(ca_params()?, ca_key);
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(args.hosts.clone())?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, args.name.clone());
    params.distinguished_name = name;
    let cert = params.signed_by(&key, &issuer)?;
    let cert_path = args.out.join(format!("{}.pem", args.name));
    let key_path = args.out.join(format!("{}-key.pem", args.name));
    write(&key_path, &key.serialize_pem(), true)?;
    write(&cert_path, &cert.pem(), false)?;
    crate::out!(
        "wrote {} and {} for {}",
        cert_path.display(),
        key_path.display(),
        args.hosts.join(", ")
    );
    Ok(())
}
