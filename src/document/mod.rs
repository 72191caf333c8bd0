//! Text of documents: the format is detected from the content, never from a
//! file name, and the text is kept in located parts (pages, paragraphs,
//! rows) so that each extracted value can point back to where it came from.
//!
//! No network and no async here: the interpreter fetches the bytes.

pub mod coerce;
mod docx;
mod html;
mod pdf;

use std::fmt;

use serde::Serialize;

/// A detected document format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Pdf,
    Docx,
    Html,
    Json,
    Csv,
    Markdown,
    Text,
    Png,
    Jpeg,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Pdf => "PDF",
            Format::Docx => "DOCX",
            Format::Html => "HTML",
            Format::Json => "JSON",
            Format::Csv => "CSV",
            Format::Markdown => "Markdown",
            Format::Text => "plain text",
            Format::Png => "PNG",
            Format::Jpeg => "JPEG",
        }
    }
}

/// Where a part of a document stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Location {
    /// A PDF page, from 1.
    Page(usize),
    /// A paragraph of a text document, or a paragraph or table of a DOCX,
    /// from 1.
    Paragraph(usize),
    /// A CSV row, from 1, the header row included.
    Row(usize),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Page(number) => write!(f, "page {number}"),
            Location::Paragraph(number) => write!(f, "paragraph {number}"),
            Location::Row(number) => write!(f, "row {number}"),
        }
    }
}

/// One located piece of a document's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub location: Location,
    pub text: String,
}

/// A document's text, in reading order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    pub format: Format,
    pub parts: Vec<Part>,
}

impl Document {
    /// The whole text, parts separated by blank lines.
    pub fn text(&self) -> String {
        let texts: Vec<&str> = self.parts.iter().map(|part| part.text.as_str()).collect();
        texts.join("\n\n")
    }
}

/// Why a document's text could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocumentError {
    #[error("the document is a {} image, which has no extractable text; it needs OCR or a vision model", .0.as_str())]
    NoText(Format),
    #[error("the PDF has no text layer (it holds only images); it needs OCR or a vision model")]
    ScannedPdf,
    #[error("the PDF is encrypted with a password; flowrun opens only PDFs whose user password is empty")]
    Encrypted,
    #[error("the file is not a supported document ({0}); supported are PDF, DOCX, HTML, JSON, CSV, Markdown and plain text")]
    Unsupported(String),
    #[error("the {kind} file is damaged: {reason}", kind = .0.as_str(), reason = .1)]
    Damaged(Format, String),
    #[error("the document contains no text")]
    Empty,
    #[error("{0}")]
    ReaderMissing(String),
}

/// Detects the format of `bytes` from their content.
pub fn detect(bytes: &[u8]) -> Result<Format, DocumentError> {
    let start = &bytes[..bytes.len().min(1024)];
    let trimmed_start = trim_ascii_start(start);
    if trimmed_start.starts_with(b"%PDF-") {
        return Ok(Format::Pdf);
    }
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Ok(Format::Png);
    }
    if bytes.starts_with(b"\xff\xd8\xff") {
        return Ok(Format::Jpeg);
    }
    if bytes.starts_with(b"PK\x03\x04") {
        return if docx::is_docx(bytes) {
            Ok(Format::Docx)
        } else {
            Err(DocumentError::Unsupported(
                "a ZIP archive that is not a Word document".to_string(),
            ))
        };
    }
    let text = std::str::from_utf8(bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes))
        .map_err(|_| DocumentError::Unsupported("binary data that is not UTF-8 text".to_string()))?;
    let head = text.trim_start();
    if (head.starts_with('{') || head.starts_with('['))
        && serde_json::from_str::<serde_json::Value>(text).is_ok()
    {
        return Ok(Format::Json);
    }
    if html::looks_like_html(head) {
        return Ok(Format::Html);
    }
    if looks_like_csv(text) {
        return Ok(Format::Csv);
    }
    if looks_like_markdown(text) {
        return Ok(Format::Markdown);
    }
    Ok(Format::Text)
}

/// Renders the first `max_pages` pages of a PDF as PNG images.
pub fn pdf_page_images(bytes: &[u8], max_pages: usize) -> Result<Vec<Vec<u8>>, DocumentError> {
    pdf::page_images(bytes, max_pages)
}

/// Reads the text of a document of any supported format.
pub fn read(bytes: &[u8]) -> Result<Document, DocumentError> {
    let format = detect(bytes)?;
    let parts = match format {
        Format::Pdf => pdf::pages(bytes)?,
        Format::Docx => docx::blocks(bytes)?,
        Format::Png | Format::Jpeg => return Err(DocumentError::NoText(format)),
        Format::Html => paragraphs(&html::visible_text(as_text(bytes))),
        Format::Json => {
            let value: serde_json::Value = serde_json::from_str(as_text(bytes))
                .map_err(|error| DocumentError::Damaged(Format::Json, error.to_string()))?;
            let pretty = serde_json::to_string_pretty(&value).unwrap_or_default();
            vec![Part {
                location: Location::Paragraph(1),
                text: pretty,
            }]
        }
        Format::Csv => csv_rows(as_text(bytes)),
        Format::Markdown | Format::Text => paragraphs(as_text(bytes)),
    };
    if parts.iter().all(|part| part.text.trim().is_empty()) {
        return Err(DocumentError::Empty);
    }
    Ok(Document { format, parts })
}

fn as_text(bytes: &[u8]) -> &str {
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    std::str::from_utf8(bytes).unwrap_or_default()
}

fn trim_ascii_start(bytes: &[u8]) -> &[u8] {
    let skip = bytes.iter().take_while(|byte| byte.is_ascii_whitespace()).count();
    &bytes[skip..]
}

/// Splits text into paragraphs at blank lines, trimming each and dropping
/// line ends written as `\r\n`.
pub(crate) fn paragraphs(text: &str) -> Vec<Part> {
    let text = text.replace("\r\n", "\n");
    let mut parts = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    let flush = |current: &mut Vec<&str>, parts: &mut Vec<Part>| {
        if !current.is_empty() {
            parts.push(Part {
                location: Location::Paragraph(parts.len() + 1),
                text: current.join("\n"),
            });
            current.clear();
        }
    };
    for line in text.lines() {
        let line = line.trim_end();
        if line.trim().is_empty() {
            flush(&mut current, &mut parts);
        } else {
            current.push(line);
        }
    }
    flush(&mut current, &mut parts);
    parts
}

/// True when at least two lines split into the same number (two or more)
/// of comma-separated cells, quotes respected.
fn looks_like_csv(text: &str) -> bool {
    let mut lines = text.lines().filter(|line| !line.trim().is_empty());
    let Some(first) = lines.next() else {
        return false;
    };
    let columns = split_csv_line(first).len();
    if columns < 2 {
        return false;
    }
    let rest: Vec<&str> = lines.collect();
    !rest.is_empty() && rest.iter().all(|line| split_csv_line(line).len() == columns)
}

/// Splits one CSV line into cells, RFC 4180 quotes removed.
fn split_csv_line(line: &str) -> Vec<String> {
    let mut cells = Vec::new();
    let mut cell = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cell.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => cells.push(std::mem::take(&mut cell)),
            _ => cell.push(c),
        }
    }
    cells.push(cell);
    cells
}

/// One part per CSV row, its cells separated by tabs.
fn csv_rows(text: &str) -> Vec<Part> {
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .enumerate()
        .map(|(index, line)| Part {
            location: Location::Row(index + 1),
            text: split_csv_line(line.trim_end_matches('\r'))
                .iter()
                .map(|cell| cell.trim())
                .collect::<Vec<_>>()
                .join("\t"),
        })
        .collect()
}

/// True when a line starts with a Markdown heading, list or fence marker.
fn looks_like_markdown(text: &str) -> bool {
    text.lines().any(|line| {
        let line = line.trim_start();
        line.starts_with("# ")
            || line.starts_with("## ")
            || line.starts_with("```")
            || line.starts_with("- [")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_detected_from_content() {
        assert_eq!(detect(b"%PDF-1.7\n..."), Ok(Format::Pdf));
        assert_eq!(detect(b"\x89PNG\r\n\x1a\n...."), Ok(Format::Png));
        assert_eq!(detect(b"\xff\xd8\xff\xe0...."), Ok(Format::Jpeg));
        assert_eq!(detect(b"  {\"a\": 1}"), Ok(Format::Json));
        assert_eq!(
            detect(b"<!DOCTYPE html><html><body>x</body></html>"),
            Ok(Format::Html)
        );
        assert_eq!(detect(b"name,amount\nAda,12\n"), Ok(Format::Csv));
        assert_eq!(detect(b"# Policy\n\nText"), Ok(Format::Markdown));
        assert_eq!(detect(b"Just a note, with a comma.\n"), Ok(Format::Text));
        assert!(matches!(
            detect(b"\x00\x01\xfe\xff"),
            Err(DocumentError::Unsupported(_))
        ));
    }

    #[test]
    fn csv_rows_become_tab_separated_parts() {
        let document = read(b"name,amount\n\"Doe, Jane\",\"1,234.50\"\n").unwrap();
        assert_eq!(document.format, Format::Csv);
        assert_eq!(
            document.parts,
            vec![
                Part {
                    location: Location::Row(1),
                    text: "name\tamount".to_string()
                },
                Part {
                    location: Location::Row(2),
                    text: "Doe, Jane\t1,234.50".to_string()
                },
            ]
        );
    }

    #[test]
    fn text_splits_into_paragraphs() {
        let document = read(b"First line\r\nsecond line\r\n\r\n\r\nNext paragraph\n").unwrap();
        assert_eq!(document.text(), "First line\nsecond line\n\nNext paragraph");
        assert_eq!(document.parts[1].location, Location::Paragraph(2));
    }

    #[test]
    fn json_is_pretty_printed() {
        let document = read(br#"{"policy":{"number":"P-1"}}"#).unwrap();
        assert_eq!(
            document.text(),
            "{\n  \"policy\": {\n    \"number\": \"P-1\"\n  }\n}"
        );
    }

    #[test]
    fn empty_and_image_documents_are_errors() {
        assert_eq!(read(b"  \n\n "), Err(DocumentError::Empty));
        assert_eq!(
            read(b"\x89PNG\r\n\x1a\n....").unwrap_err().to_string(),
            "the document is a PNG image, which has no extractable text; it needs OCR or a vision model"
        );
    }
}
