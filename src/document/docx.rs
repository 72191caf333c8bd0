//! Word documents (DOCX): paragraphs and tables of `word/document.xml` in
//! document order. A table becomes one part, its rows separated by line
//! breaks and its cells by tabs.

use std::io::{Cursor, Read};

use crate::document::{DocumentError, Format, Location, Part};

/// The largest `word/document.xml` read, uncompressed, which stops a
/// compression bomb.
const MAX_XML_BYTES: u64 = 64 * 1024 * 1024;

/// True when the ZIP archive holds `word/document.xml`.
pub(crate) fn is_docx(bytes: &[u8]) -> bool {
    zip::ZipArchive::new(Cursor::new(bytes))
        .map(|archive| archive.file_names().any(|name| name == "word/document.xml"))
        .unwrap_or(false)
}

/// Reads the paragraphs and tables of a DOCX.
pub(crate) fn blocks(bytes: &[u8]) -> Result<Vec<Part>, DocumentError> {
    let damaged = |reason: String| DocumentError::Damaged(Format::Docx, reason);
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).map_err(|error| damaged(error.to_string()))?;
    let file = archive
        .by_name("word/document.xml")
        .map_err(|error| damaged(error.to_string()))?;
    let mut xml = String::new();
    file.take(MAX_XML_BYTES)
        .read_to_string(&mut xml)
        .map_err(|error| damaged(format!("word/document.xml cannot be read: {error}")))?;
    Ok(body_blocks(&xml))
}

#[derive(Default)]
struct Table {
    rows: Vec<Vec<String>>,
    row: Vec<String>,
    cell: String,
}

/// Walks the XML of a document body.
fn body_blocks(xml: &str) -> Vec<Part> {
    let mut parts = Vec::new();
    let mut paragraph = String::new();
    let mut table: Option<Table> = None;
    // Nested tables are read as text of the cell that holds them.
    let mut nested = 0usize;
    let mut in_text = false;
    // Paragraph properties hold tab stops named `w:tab` too.
    let mut in_properties = false;
    let mut rest = xml;
    while let Some(start) = rest.find('<') {
        if in_text {
            paragraph.push_str(&decode(&rest[..start]));
        }
        rest = &rest[start..];
        let end = rest.find('>').map_or(rest.len(), |end| end + 1);
        let tag = &rest[1..end.saturating_sub(1).max(1)];
        rest = &rest[end..];
        let closing = tag.starts_with('/');
        let self_closing = tag.ends_with('/');
        let name = tag
            .trim_start_matches('/')
            .split(|c: char| c.is_whitespace() || c == '/')
            .next()
            .unwrap_or("");
        match (name, closing) {
            ("w:pPr", false) => in_properties = !self_closing,
            ("w:pPr", true) => in_properties = false,
            _ if in_properties => {}
            ("w:t", false) => in_text = !self_closing,
            ("w:t", true) => in_text = false,
            ("w:tab", false) => paragraph.push('\t'),
            ("w:br" | "w:cr", false) => paragraph.push('\n'),
            ("w:p", true) => {
                let text = std::mem::take(&mut paragraph);
                let text = text.trim_matches([' ', '\n']);
                match table.as_mut() {
                    _ if text.is_empty() => {}
                    Some(table) => {
                        if !table.cell.is_empty() {
                            table.cell.push(' ');
                        }
                        table.cell.push_str(text);
                    }
                    None => parts.push(Part {
                        location: Location::Paragraph(parts.len() + 1),
                        text: text.to_string(),
                    }),
                }
            }
            ("w:tbl", false) if !self_closing => {
                if table.is_some() {
                    nested += 1;
                } else {
                    table = Some(Table::default());
                }
            }
            ("w:tc", true) if nested == 0 => {
                if let Some(table) = table.as_mut() {
                    let cell = std::mem::take(&mut table.cell).replace(['\t', '\n'], " ");
                    table.row.push(cell);
                }
            }
            ("w:tr", true) if nested == 0 => {
                if let Some(table) = table.as_mut() {
                    let row = std::mem::take(&mut table.row);
                    table.rows.push(row);
                }
            }
            ("w:tbl", true) => {
                if nested > 0 {
                    nested -= 1;
                } else if let Some(done) = table.take() {
                    let text: Vec<String> = done.rows.iter().map(|row| row.join("\t")).collect();
                    let text = text.join("\n");
                    if !text.trim().is_empty() {
                        parts.push(Part {
                            location: Location::Paragraph(parts.len() + 1),
                            text,
                        });
                    }
                }
            }
            _ => {}
        }
    }
    parts
}

/// Decodes the five XML entities and numeric references.
fn decode(text: &str) -> String {
    if !text.contains('&') {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('&') {
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        let Some(end) = rest.find(';') else { break };
        let name = &rest[1..end];
        let c = match name {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => name
                .strip_prefix("#x")
                .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                .or_else(|| name.strip_prefix('#').and_then(|digits| digits.parse().ok()))
                .and_then(char::from_u32),
        };
        match c {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::body_blocks;
    use crate::document::Location;

    #[test]
    fn paragraphs_and_tables_keep_their_order() {
        let xml = r#"<w:document><w:body>
<w:p><w:pPr><w:tabs><w:tab w:val="left"/></w:tabs></w:pPr><w:r><w:t>Policy</w:t></w:r><w:r><w:t xml:space="preserve"> P-100 &amp; co</w:t></w:r></w:p>
<w:p/>
<w:tbl><w:tr><w:tc><w:p><w:r><w:t>Driver</w:t></w:r></w:p></w:tc><w:tc><w:p><w:r><w:t>Age</w:t></w:r></w:p></w:tc></w:tr>
<w:tr><w:tc><w:p><w:r><w:t>Ada</w:t></w:r></w:p></w:tc><w:tc><w:p><w:r><w:t>36</w:t></w:r></w:p></w:tc></w:tr></w:tbl>
<w:p><w:r><w:t>Total</w:t><w:tab/><w:t>$1,234.50</w:t><w:br/><w:t>Due</w:t></w:r></w:p>
</w:body></w:document>"#;
        let parts = body_blocks(xml);
        let texts: Vec<&str> = parts.iter().map(|part| part.text.as_str()).collect();
        assert_eq!(
            texts,
            vec![
                "Policy P-100 & co",
                "Driver\tAge\nAda\t36",
                "Total\t$1,234.50\nDue"
            ]
        );
        assert_eq!(parts[2].location, Location::Paragraph(3));
    }
}
