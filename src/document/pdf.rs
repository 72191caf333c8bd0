//! The text layer of PDFs, read by poppler's `pdftotext`, one part per
//! page. docs/extraction.md tells why this reader was chosen.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::document::{DocumentError, Format, Location, Part};

/// The environment variable that names the `pdftotext` program; by
/// default it is looked up on `PATH`.
pub const PDFTOTEXT_ENV: &str = "FLOWRUN_PDFTOTEXT";

/// Reads the text of each page. Pages without text are left out, and a PDF
/// with no text on any page is [`DocumentError::ScannedPdf`].
pub(crate) fn pages(bytes: &[u8]) -> Result<Vec<Part>, DocumentError> {
    let program = std::env::var(PDFTOTEXT_ENV).unwrap_or_else(|_| "pdftotext".to_string());
    let mut child = Command::new(&program)
        .args(["-q", "-enc", "UTF-8", "-eol", "unix", "-", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| {
            DocumentError::ReaderMissing(format!(
                "reading PDF text needs poppler's `pdftotext`, which could not be started ({error}); install poppler-utils, or set {PDFTOTEXT_ENV} to its path"
            ))
        })?;
    let mut stdin = child.stdin.take();
    let input = bytes.to_vec();
    // The input is written from another thread, so that a large output
    // cannot fill its pipe while this thread is still writing.
    let writer = std::thread::spawn(move || {
        if let Some(stdin) = stdin.as_mut() {
            let _ = stdin.write_all(&input);
        }
    });
    let output = child
        .wait_with_output()
        .map_err(|error| DocumentError::Damaged(Format::Pdf, format!("pdftotext failed: {error}")))?;
    let _ = writer.join();
    if !output.status.success() {
        // Exit code 1 means the file could not be opened; poppler reports a
        // wrong password on standard error even with -q.
        let stderr = String::from_utf8_lossy(&output.stderr);
        if stderr.contains("Incorrect password") || is_encrypted_with_password(bytes) {
            return Err(DocumentError::Encrypted);
        }
        let reason = stderr
            .lines()
            .last()
            .unwrap_or("pdftotext could not open it")
            .trim();
        return Err(DocumentError::Damaged(
            Format::Pdf,
            if reason.is_empty() {
                "pdftotext could not open it".to_string()
            } else {
                reason.to_string()
            },
        ));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let parts: Vec<Part> = text
        .split('\u{c}')
        .enumerate()
        .filter_map(|(index, page)| {
            let page = page.trim_matches('\n').trim_end();
            (!page.trim().is_empty()).then(|| Part {
                location: Location::Page(index + 1),
                text: page.to_string(),
            })
        })
        .collect();
    if parts.is_empty() {
        return Err(DocumentError::ScannedPdf);
    }
    Ok(parts)
}

/// The environment variable that names the `pdftoppm` program; by default
/// it is looked up on `PATH`.
pub const PDFTOPPM_ENV: &str = "FLOWRUN_PDFTOPPM";

/// Renders the first `max_pages` pages as PNG images at 150 dpi, with
/// poppler's `pdftoppm`, for a model that reads images.
pub(crate) fn page_images(bytes: &[u8], max_pages: usize) -> Result<Vec<Vec<u8>>, DocumentError> {
    let program = std::env::var(PDFTOPPM_ENV).unwrap_or_else(|_| "pdftoppm".to_string());
    let folder = std::env::temp_dir().join(format!("flowrun-pages-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&folder).map_err(|error| {
        DocumentError::Damaged(Format::Pdf, format!("no folder for page images: {error}"))
    })?;
    let result = render(&program, bytes, max_pages, &folder);
    let _ = std::fs::remove_dir_all(&folder);
    result
}

fn render(
    program: &str,
    bytes: &[u8],
    max_pages: usize,
    folder: &std::path::Path,
) -> Result<Vec<Vec<u8>>, DocumentError> {
    let mut child = Command::new(program)
        .args(["-q", "-png", "-r", "150", "-l", &max_pages.to_string(), "-"])
        .arg(folder.join("page"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| {
            DocumentError::ReaderMissing(format!(
                "rendering PDF pages needs poppler's `pdftoppm`, which could not be started ({error}); install poppler-utils, or set {PDFTOPPM_ENV} to its path"
            ))
        })?;
    let mut stdin = child.stdin.take();
    let input = bytes.to_vec();
    let writer = std::thread::spawn(move || {
        if let Some(stdin) = stdin.as_mut() {
            let _ = stdin.write_all(&input);
        }
    });
    let output = child
        .wait_with_output()
        .map_err(|error| DocumentError::Damaged(Format::Pdf, format!("pdftoppm failed: {error}")))?;
    let _ = writer.join();
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(DocumentError::Damaged(
            Format::Pdf,
            format!("pdftoppm could not render it: {}", stderr.trim()),
        ));
    }
    // pdftoppm pads page numbers to the same width, so names sort in page order.
    let mut paths: Vec<std::path::PathBuf> = std::fs::read_dir(folder)
        .map_err(|error| DocumentError::Damaged(Format::Pdf, error.to_string()))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|extension| extension == "png"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|path| {
            std::fs::read(path).map_err(|error| DocumentError::Damaged(Format::Pdf, error.to_string()))
        })
        .collect()
}

/// True when the trailer names an encryption dictionary, the fallback when
/// `pdftotext` says nothing about a password.
fn is_encrypted_with_password(bytes: &[u8]) -> bool {
    bytes.windows(8).any(|window| window == b"/Encrypt")
}
