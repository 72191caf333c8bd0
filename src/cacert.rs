//! Reads the PEM file of `--cacert`: certificates of certificate authorities
//! that the HTTP client trusts besides the public ones.

use std::path::Path;

use rustls_pki_types::pem::{self, PemObject as _, SectionKind};
use rustls_pki_types::CertificateDer;

use crate::diagnostic::{Code, Diagnostic};
use crate::input::read_regular_file;

/// The largest CA file read: 16 MiB. Debian's bundle of 144 public CAs,
/// `/etc/ssl/certs/ca-certificates.crt`, is 219,597 bytes long.
const MAX_CACERT_BYTES: u64 = 16 * 1024 * 1024;

/// The command-line option and environment variable that name a CA file.
pub const OPTION: &str = "--cacert (or FLOWRUN_CACERT)";

/// Reads every certificate of the PEM file at `path`. The file must contain
/// at least one `CERTIFICATE` section, and each must parse as an X.509
/// certificate. Other sections, such as a private key, are ignored.
/// `origin` names the setting that gave the path, such as [`OPTION`], for
/// the help of diagnostics.
pub fn read_ca_certificates(path: &Path, origin: &str) -> Result<Vec<CertificateDer<'static>>, Diagnostic> {
    let shown = path.display();
    let bytes = read_regular_file(path, Some(MAX_CACERT_BYTES)).map_err(|error| {
        invalid(
            format!("cannot read CA certificate file `{shown}`: {error}"),
            format!("set {origin} to the path of a PEM file that holds the certificate of the certificate authority"),
        )
    })?;
    let labels = section_labels(&bytes);
    if labels.is_empty() {
        return Err(invalid(
            format!("CA certificate file `{shown}` is not PEM: it has no `-----BEGIN CERTIFICATE-----` line"),
            format!(
                "convert a DER certificate to PEM with `openssl x509 -inform der -in {shown} -out ca.pem` and set {origin} to ca.pem"
            ),
        ));
    }

    let mut certificates = Vec::new();
    for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(&bytes) {
        let (kind, der) = section.map_err(|error| {
            invalid(
                format!("CA certificate file `{shown}` is not valid PEM: {}", describe_pem_error(&error)),
                "export the certificate again in PEM, with each section between its `-----BEGIN` and `-----END` lines"
                    .to_string(),
            )
        })?;
        if kind == SectionKind::Certificate {
            certificates.push(CertificateDer::from(der));
        }
    }
    if certificates.is_empty() {
        return Err(invalid(
            format!(
                "CA certificate file `{shown}` contains no certificate, only {}",
                labels.join(", ")
            ),
            format!("set {origin} to the file that begins with `-----BEGIN CERTIFICATE-----`; a private key is not needed"),
        ));
    }

    for (index, certificate) in certificates.iter().enumerate() {
        // The same check that the HTTP client makes when it adds a trust
        // anchor, so that a broken certificate is reported here, by number.
        let mut store = rustls::RootCertStore::empty();
        if let Err(error) = store.add(certificate.clone()) {
            // The error's own text calls it a "peer certificate", which
            // this is not.
            let reason = match error {
                rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding) => {
                    "its bytes do not decode as a DER certificate".to_string()
                }
                rustls::Error::InvalidCertificate(reason) => format!("{reason:?}"),
                other => other.to_string(),
            };
            return Err(invalid(
                format!(
                    "CA certificate file `{shown}`: certificate {} of {} is not a valid X.509 certificate: {reason}",
                    index + 1,
                    certificates.len()
                ),
                "export the certificate of the certificate authority again, in PEM".to_string(),
            ));
        }
    }
    Ok(certificates)
}

/// Lists the labels of the `-----BEGIN LABEL-----` lines, such as
/// `PRIVATE KEY`, in the order they appear.
fn section_labels(bytes: &[u8]) -> Vec<String> {
    bytes
        .split(|&byte| byte == b'\n')
        .filter_map(|line| line.trim_ascii_end().strip_prefix(b"-----BEGIN "))
        .map(|rest| {
            let label = rest.strip_suffix(b"-----").unwrap_or(rest);
            format!("`{}`", String::from_utf8_lossy(label))
        })
        .collect()
}

/// Describes a PEM syntax error with the text of labels and lines, which
/// the PEM parser's own message shows as lists of bytes.
fn describe_pem_error(error: &pem::Error) -> String {
    match error {
        pem::Error::MissingSectionEnd { end_marker } => {
            let label = String::from_utf8_lossy(end_marker);
            format!("the `-----BEGIN {label}-----` section has no `-----END {label}-----` line")
        }
        pem::Error::IllegalSectionStart { line } => format!(
            "the line `{}` starts a section but does not end with `-----`",
            String::from_utf8_lossy(line).trim_end()
        ),
        pem::Error::Base64Decode(_) => {
            "the text between its `-----BEGIN` and `-----END` lines is not valid base64".to_string()
        }
        other => other.to_string(),
    }
}

fn invalid(message: String, help: String) -> Diagnostic {
    Diagnostic::error(Code::InvalidCaCert, message).with_help(help)
}
