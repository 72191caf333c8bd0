//! Runs an `extract` action. It loads the document and reads its text, then
//! requests the declared fields from the model chunk by chunk. The chunk
//! results are merged and coerced, their sources recorded, and the values
//! written.

use serde_json::{Map, Value};
use tracing::info;

use crate::diagnostic::{Code, Diagnostic};
use crate::document::{self, coerce, Document, DocumentError, Format, Location, Part};
use crate::llm::schema::{self, Field, FieldType};
use crate::llm::{ChatRequest, FinishReason, Image, Message, Role, StructuredOutput};
use crate::program::{ExtractCall, LlmTarget};
use crate::render;
use crate::run::errors::render_diagnostic;
use crate::run::llm::{self, CallContext};
use crate::run::media::{self, Records};
use crate::run::report::{Provenance, RenderedRequest};
use crate::run::save::set_path;
use crate::run::Execution;

/// The system prompt of every extraction request.
const SYSTEM: &str = "You extract data from documents. Answer with one JSON object that has exactly the requested fields. \
Copy each value as the document states it. Use null for a field that this part of the document does not state.";

/// Runs one `extract` action.
pub(crate) async fn run(
    call: &ExtractCall,
    context: &CallContext<'_>,
    execution: &mut Execution,
    records: &mut Records<'_>,
) -> Result<(), Diagnostic> {
    let fail = |code: Code, message: String, help: &str| {
        Diagnostic::error(code, message)
            .with_label(call.span, "this extract action")
            .with_help(help.to_string())
    };
    let reference = media::reference(&call.source, execution, call.span)?;
    let scope = execution.scope();
    let render = |template| {
        render::render(template, &scope)
            .map_err(|error| render_diagnostic(&error, context.lines, &execution.redactor))
    };
    let instructions = call.prompt.as_ref().map(render).transpose()?;
    let system = match call.system.as_ref().map(render).transpose()? {
        Some(extra) => format!("{SYSTEM}\n{extra}"),
        None => SYSTEM.to_string(),
    };

    if context.dry_run {
        records.dry_run.push(RenderedRequest {
            step: context.step.name.clone(),
            method: "EXTRACT".to_string(),
            url: execution.redactor.redact(&shorten_reference(&reference)),
            headers: Vec::new(),
            body: None,
            error: None,
        });
        write(call, placeholder(&call.fields), execution)
            .map_err(|message| fail(Code::SaveFailed, message, "check the target of `->`"))?;
        return Ok(());
    }

    let provider =
        llm::resolve_provider(context.program, call.provider.as_deref(), execution).map_err(|message| {
            fail(
                Code::LlmFailed,
                message,
                "configure the provider in the workflow, flowrun.toml or the environment",
            )
        })?;
    let Some(model) = call.model.clone().or_else(|| provider.model.clone()) else {
        return Err(fail(
            Code::LlmFailed,
            format!("no model is set for provider `{}`", provider.name),
            "write `model \"NAME\"` in the action, set `model` in the provider, or set FLOWRUN_LLM_MODEL",
        ));
    };

    let params = &context.step.settings.media;
    let loaded = media::load(
        &reference,
        params.max_file_size,
        context,
        execution,
        records.attempts,
        call.span,
    )
    .await?;
    let bytes = loaded.bytes.clone();
    let vision = provider.vision;
    let read = tokio::task::spawn_blocking(move || read_document(&bytes, vision))
        .await
        .map_err(|error| {
            fail(
                Code::ExtractFailed,
                format!("reading the document failed: {error}"),
                "report this as a bug",
            )
        })?
        .map_err(|error| document_failure(&error, &loaded.display, call))?;
    let (document, images) = read;
    info!(
        step = %context.step.name,
        "read {} as {} ({} parts, {} characters, {} images)",
        loaded.display,
        document.format.as_str(),
        document.parts.len(),
        document.text().chars().count(),
        images.len()
    );

    let chunks = if images.is_empty() {
        chunks(&document.parts, params.input_budget)
    } else {
        vec![format!(
            "The document has no text layer; it is attached as {} image(s), in page order.",
            images.len()
        )]
    };
    // With several chunks every field admits null in the request, because
    // one chunk may not hold it; required fields are enforced after the
    // merge.
    let request_fields: Vec<Field> = call
        .fields
        .iter()
        .map(|field| Field {
            optional: field.optional || chunks.len() > 1,
            ..field.clone()
        })
        .collect();
    let structured = StructuredOutput {
        name: "extraction".to_string(),
        schema: schema::object_schema(&request_fields),
    };
    let mut answers = Vec::new();
    for (index, chunk) in chunks.iter().enumerate() {
        let mut prompt = String::new();
        if let Some(instructions) = &instructions {
            prompt.push_str(instructions);
            prompt.push_str("\n\n");
        }
        prompt.push_str(&format!(
            "Fields to extract:\n{}\n\n",
            describe_fields(&call.fields)
        ));
        if chunks.len() > 1 {
            prompt.push_str(&format!("Document, part {} of {}:\n", index + 1, chunks.len()));
        } else {
            prompt.push_str("Document:\n");
        }
        prompt.push_str(chunk);
        let request = ChatRequest {
            model: model.clone(),
            system: Some(system.clone()),
            messages: vec![Message {
                role: Role::User,
                content: prompt,
            }],
            max_tokens: context.step.settings.llm.max_tokens,
            temperature: context.step.settings.llm.temperature,
            top_p: context.step.settings.llm.top_p,
            seed: context.step.settings.llm.seed,
            structured: Some(structured.clone()),
            images: if index == 0 { images.clone() } else { Vec::new() },
        };
        let completion = llm::complete(
            &provider,
            &request,
            context,
            execution,
            records.attempts,
            records.usage,
        )
        .await?;
        match completion.finish {
            FinishReason::Length => {
                return Err(fail(
                    Code::LlmTruncated,
                    format!(
                        "the answer of model `{}` for part {} of the document was cut at its token limit",
                        completion.model,
                        index + 1
                    ),
                    "raise the limit with a line such as `max_tokens 2000`, or lower `input_budget`",
                ))
            }
            FinishReason::Refusal | FinishReason::ContentFilter => {
                return Err(fail(
                    Code::LlmRefused,
                    format!(
                        "model `{}` refused to extract from part {} of the document",
                        completion.model,
                        index + 1
                    ),
                    "check the document, or handle the refusal with the step's `on error` line",
                ))
            }
            FinishReason::Stop | FinishReason::Other => {}
        }
        let text = execution.redactor.redact(&completion.text);
        let answer = parse_answer(&text).map_err(|problem| {
            fail(
                Code::LlmInvalidOutput,
                format!(
                    "the answer of model `{}` for part {} of the document {problem}",
                    completion.model,
                    index + 1
                ),
                "use a model that supports structured output, or retry the step",
            )
        })?;
        answers.push(answer);
    }
    let merged = merge_answers(&answers, &call.fields);
    let value = coerce::coerce_object(&merged, &call.fields).map_err(|problem| {
        fail(
            Code::ExtractFailed,
            format!("the extracted value is invalid: {problem}"),
            "mark the field optional with `?` when documents may lack it, or describe it more precisely",
        )
    })?;
    records
        .provenance
        .extend(provenance(&merged, &value, &call.fields, &document));
    let value = execution.redact_value(value);
    write(call, value, execution)
        .map_err(|message| fail(Code::SaveFailed, message, "check the target of `->`"))
}

fn shorten_reference(reference: &str) -> String {
    if reference.len() > 5 && reference[..5].eq_ignore_ascii_case("data:") {
        format!("{},…", reference.split(',').next().unwrap_or("data:"))
    } else {
        reference.to_string()
    }
}

/// The maximum number of pages of a PDF without text sent as images.
const MAX_IMAGE_PAGES: usize = 20;

/// Reads a document's text. A PNG or JPEG image, or a PDF with no text
/// layer, becomes images for a model that reads them when `vision` is true.
fn read_document(bytes: &[u8], vision: bool) -> Result<(Document, Vec<Image>), DocumentError> {
    let error = match document::read(bytes) {
        Ok(document) => return Ok((document, Vec::new())),
        Err(error) => error,
    };
    if !vision {
        return Err(error);
    }
    let image = |media_type: &str, data: Vec<u8>| Image {
        media_type: media_type.to_string(),
        data,
    };
    let (format, images) = match error {
        DocumentError::NoText(Format::Jpeg) => (Format::Jpeg, vec![image("image/jpeg", bytes.to_vec())]),
        DocumentError::NoText(format) => (format, vec![image("image/png", bytes.to_vec())]),
        DocumentError::ScannedPdf => (
            Format::Pdf,
            document::pdf_page_images(bytes, MAX_IMAGE_PAGES)?
                .into_iter()
                .map(|data| image("image/png", data))
                .collect(),
        ),
        other => return Err(other),
    };
    Ok((
        Document {
            format,
            parts: Vec::new(),
        },
        images,
    ))
}

fn document_failure(error: &DocumentError, display: &str, call: &ExtractCall) -> Diagnostic {
    let help = match error {
        DocumentError::NoText(_) | DocumentError::ScannedPdf => {
            "set `vision true` on a provider whose model reads images, or run OCR on the file first"
        }
        DocumentError::Encrypted => "remove the password from the PDF, or save it again without encryption",
        DocumentError::Unsupported(_) => {
            "convert the file to PDF, DOCX, HTML, CSV, JSON, Markdown or plain text"
        }
        DocumentError::Damaged(..) => "check that the file is complete; open it in its usual program",
        DocumentError::Empty => "check that the right file is referenced",
        DocumentError::ReaderMissing(_) => "install poppler-utils (Debian, Ubuntu) or poppler (Homebrew)",
    };
    Diagnostic::error(
        Code::ExtractFailed,
        format!("cannot extract from {display}: {error}"),
    )
    .with_label(call.span, "this extract action")
    .with_help(help.to_string())
}

/// Splits the parts into chunks of at most `budget` characters, keeping
/// parts whole when they fit and labelling each with its location.
pub(crate) fn chunks(parts: &[Part], budget: usize) -> Vec<String> {
    let mut chunks = Vec::new();
    let mut current = String::new();
    for part in parts {
        let label = format!("[{}]\n", part.location);
        let pieces = split_text(&part.text, budget.saturating_sub(label.len() + 2).max(1));
        for piece in pieces {
            let block = format!("{label}{piece}");
            if !current.is_empty() && current.chars().count() + 2 + block.chars().count() > budget {
                chunks.push(std::mem::take(&mut current));
            }
            if !current.is_empty() {
                current.push_str("\n\n");
            }
            current.push_str(&block);
        }
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

/// Splits text into pieces of at most `limit` characters, at white space
/// where there is some.
fn split_text(text: &str, limit: usize) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while rest.chars().count() > limit {
        let cut = rest
            .char_indices()
            .nth(limit)
            .map_or(rest.len(), |(index, _)| index);
        let at = rest[..cut]
            .rfind(char::is_whitespace)
            .filter(|&at| at > 0)
            .unwrap_or(cut);
        pieces.push(rest[..at].trim_end().to_string());
        rest = rest[at..].trim_start();
    }
    if !rest.is_empty() {
        pieces.push(rest.to_string());
    }
    pieces
}

fn describe_fields(fields: &[Field]) -> String {
    fields
        .iter()
        .map(|field| {
            let mut line = format!("- {}: {}", field.name, type_name(&field.ty));
            if let Some(description) = &field.description {
                line.push_str(&format!(" ({description})"));
            }
            line
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn type_name(ty: &FieldType) -> String {
    match ty {
        FieldType::Text => "text".to_string(),
        FieldType::Number => "number".to_string(),
        FieldType::Integer => "integer".to_string(),
        FieldType::Boolean => "boolean".to_string(),
        FieldType::Date => "date, YYYY-MM-DD".to_string(),
        FieldType::Enum(members) => format!("one of {}", members.join(", ")),
        FieldType::List(item) => format!("list of {}", type_name(item)),
        FieldType::Object(fields) => format!(
            "object with {}",
            fields
                .iter()
                .map(|field| field.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Reads a model's answer as one JSON object. An answer that starts as an
/// object but does not parse, as one holding `NaN` does, is invalid as a
/// whole: a valid span inside it, such as an empty list, is not taken for
/// the answer.
fn parse_answer(text: &str) -> Result<Value, String> {
    let trimmed = text.trim();
    let value = match serde_json::from_str::<Value>(trimmed) {
        Ok(value) => value,
        Err(error) if trimmed.starts_with('{') => {
            return Err(format!("is not valid JSON: {error}"));
        }
        Err(_) => schema::extract_json(text).ok_or("contains no JSON object")?,
    };
    match value {
        Value::Object(_) => Ok(value),
        other => Err(format!(
            "is not a JSON object but {}",
            cut(&other.to_string(), 80)
        )),
    }
}

/// Merges the answers of the chunks, in document order: a scalar takes the
/// first value that is not null or blank, a list joins the items of every
/// chunk without repeating one, and an object merges member by member by
/// the same rule.
pub(crate) fn merge_answers(answers: &[Value], fields: &[Field]) -> Value {
    let mut merged = Map::new();
    for field in fields {
        let values: Vec<&Value> = answers
            .iter()
            .filter_map(|answer| answer.get(&field.name))
            .collect();
        merged.insert(field.name.clone(), merge_values(&values, &field.ty));
    }
    Value::Object(merged)
}

fn merge_values(values: &[&Value], ty: &FieldType) -> Value {
    match ty {
        FieldType::List(item_type) => {
            let mut items: Vec<Value> = Vec::new();
            let mut any = false;
            for value in values {
                match value {
                    Value::Array(list) => {
                        any = true;
                        for item in list {
                            if !items.contains(item) {
                                items.push(item.clone());
                            }
                        }
                    }
                    Value::Null => {}
                    // A list written as one string is split here, so that
                    // its items join those of other chunks one by one.
                    Value::String(text) if !coerce::is_no_value(text, item_type) => {
                        any = true;
                        for piece in coerce::list_items(text) {
                            let item = Value::String(piece.to_string());
                            if !items.contains(&item) {
                                items.push(item);
                            }
                        }
                    }
                    other if !is_blank(other, ty) => {
                        any = true;
                        if !items.contains(other) {
                            items.push((*other).clone());
                        }
                    }
                    _ => {}
                }
            }
            if any {
                Value::Array(items)
            } else {
                Value::Null
            }
        }
        FieldType::Object(fields) => {
            let objects: Vec<Value> = values
                .iter()
                .filter(|value| value.is_object())
                .map(|value| (*value).clone())
                .collect();
            if objects.is_empty() {
                Value::Null
            } else {
                merge_answers(&objects, fields)
            }
        }
        _ => values
            .iter()
            .find(|value| !is_blank(value, ty))
            .map_or(Value::Null, |value| (*value).clone()),
    }
}

/// Whether a chunk's value gives nothing: null, blank, or a placeholder
/// such as `"N/A"`, so that a later chunk's value is taken instead.
fn is_blank(value: &Value, ty: &FieldType) -> bool {
    match value {
        Value::Null => true,
        Value::String(text) => coerce::is_no_value(text, ty),
        _ => false,
    }
}

/// Finds the source of each written field's value: the first part that
/// contains the value as the model gave it, or as the coerced value is
/// commonly written.
fn provenance(raw: &Value, coerced: &Value, fields: &[Field], document: &Document) -> Vec<Provenance> {
    fields
        .iter()
        .filter(|field| !coerced.get(&field.name).is_none_or(Value::is_null))
        .map(|field| {
            let mut needles = Vec::new();
            for value in [raw.get(&field.name), coerced.get(&field.name)]
                .into_iter()
                .flatten()
            {
                needles.extend(search_forms(value));
            }
            let found = needles
                .iter()
                .filter(|needle| needle.chars().count() >= 2)
                .find_map(|needle| locate(needle, &document.parts));
            Provenance {
                field: field.name.clone(),
                location: found.as_ref().map(|(location, _)| location.to_string()),
                snippet: found.map(|(_, snippet)| snippet),
            }
        })
        .collect()
}

/// Lists the spellings a value may have in a document.
fn search_forms(value: &Value) -> Vec<String> {
    match value {
        Value::String(text) => {
            let mut forms = vec![text.trim().to_string()];
            if let Some(date) = coerce::parse_date(text) {
                forms.extend(written_dates(&date));
                forms.push(date);
            }
            forms
        }
        Value::Number(number) => {
            let mut forms = Vec::new();
            if let Some(float) = number.as_f64() {
                forms.push(group_thousands(float, 2));
                forms.push(group_thousands(float, 0));
                forms.push(format!("{float:.2}"));
            }
            forms.push(number.to_string());
            forms
        }
        Value::Bool(_) | Value::Null => Vec::new(),
        Value::Array(items) => items.first().map(search_forms).unwrap_or_default(),
        Value::Object(members) => members.values().flat_map(search_forms).take(4).collect(),
    }
}

/// Common written forms of an ISO date: `March 1, 2026`, `1 March 2026`,
/// `03/01/2026` and `01.03.2026`.
fn written_dates(iso: &str) -> Vec<String> {
    const NAMES: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let pieces: Vec<usize> = iso.split('-').filter_map(|piece| piece.parse().ok()).collect();
    let [year, month, day] = pieces[..] else {
        return Vec::new();
    };
    let Some(name) = month.checked_sub(1).and_then(|index| NAMES.get(index)) else {
        return Vec::new();
    };
    vec![
        format!("{name} {day}, {year}"),
        format!("{day} {name} {year}"),
        format!("{month:02}/{day:02}/{year}"),
        format!("{day:02}.{month:02}.{year}"),
    ]
}

/// Writes a number with `,` between thousands and `decimals` decimals.
fn group_thousands(number: f64, decimals: usize) -> String {
    let text = format!("{:.*}", decimals, number.abs());
    let (whole, fraction) = text
        .split_once('.')
        .map_or((text.as_str(), None), |(whole, fraction)| (whole, Some(fraction)));
    let mut grouped = String::new();
    for (index, digit) in whole.chars().enumerate() {
        if index > 0 && (whole.len() - index) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    let sign = if number < 0.0 { "-" } else { "" };
    match fraction {
        Some(fraction) => format!("{sign}{grouped}.{fraction}"),
        None => format!("{sign}{grouped}"),
    }
}

/// Returns the location and line of the first part that contains `needle`,
/// ignoring case.
fn locate(needle: &str, parts: &[Part]) -> Option<(Location, String)> {
    let needle = needle.to_lowercase();
    parts.iter().find_map(|part| {
        part.text
            .lines()
            .find(|line| line.to_lowercase().contains(&needle))
            .map(|line| (part.location, cut(line.trim(), 200)))
    })
}

fn cut(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_string();
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

fn write(call: &ExtractCall, value: Value, execution: &mut Execution) -> Result<(), String> {
    match &call.target {
        None => Ok(()),
        Some(LlmTarget::Variable(name)) => {
            execution.vars.insert(name.clone(), value);
            execution.secret_vars.remove(name);
            Ok(())
        }
        Some(LlmTarget::Entity(path)) => {
            let mut entity = execution.entity.clone();
            set_path(&mut entity, path, value)?;
            execution.entity = entity;
            Ok(())
        }
        Some(LlmTarget::EntityMembers) => {
            let (Value::Object(members), Value::Object(entity)) = (value, &mut execution.entity) else {
                return Err("the extracted values are not an object".to_string());
            };
            for (key, value) in members {
                entity.insert(key, value);
            }
            Ok(())
        }
    }
}

/// Builds what a dry run writes: `<extracted>` for each field.
fn placeholder(fields: &[Field]) -> Value {
    Value::Object(
        fields
            .iter()
            .map(|field| (field.name.clone(), Value::String("<extracted>".to_string())))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn part(location: Location, text: &str) -> Part {
        Part {
            location,
            text: text.to_string(),
        }
    }

    #[test]
    fn chunks_keep_parts_whole_within_the_budget() {
        let parts = vec![
            part(Location::Page(1), &"a".repeat(30)),
            part(Location::Page(2), &"b".repeat(30)),
            part(
                Location::Page(3),
                "c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c",
            ),
        ];
        let chunks = chunks(&parts, 60);
        assert_eq!(
            chunks,
            vec![
                format!("[page 1]\n{}", "a".repeat(30)),
                format!("[page 2]\n{}", "b".repeat(30)),
                format!("[page 3]\n{}", ["c"; 24].join(" ")),
                format!("[page 3]\n{}", ["c"; 12].join(" ")),
            ]
        );
        assert!(chunks.iter().all(|chunk| chunk.chars().count() <= 60));
    }

    #[test]
    fn answers_merge_first_value_and_joined_lists() {
        let fields = vec![
            Field {
                name: "number".to_string(),
                ty: FieldType::Text,
                description: None,
                optional: false,
            },
            Field {
                name: "drivers".to_string(),
                ty: FieldType::List(Box::new(FieldType::Text)),
                description: None,
                optional: false,
            },
        ];
        let answers = vec![
            json!({"number": null, "drivers": ["Ada"]}),
            json!({"number": "P-1", "drivers": ["Ada", "Grace"]}),
            json!({"number": "P-2", "drivers": null}),
        ];
        assert_eq!(
            merge_answers(&answers, &fields),
            json!({"number": "P-1", "drivers": ["Ada", "Grace"]})
        );
    }

    #[test]
    fn provenance_finds_the_page_of_each_value() {
        let document = Document {
            format: document::Format::Pdf,
            parts: vec![
                part(
                    Location::Page(1),
                    "Policy number: HM-2024-00417\nEffective date: March 1, 2026",
                ),
                part(Location::Page(2), "Total annual premium: $1,234.50"),
            ],
        };
        let fields: Vec<Field> = ["policy_number", "effective_date", "annual_premium", "missing"]
            .iter()
            .map(|name| Field {
                name: name.to_string(),
                ty: FieldType::Text,
                description: None,
                optional: true,
            })
            .collect();
        let raw = json!({"policy_number": "hm-2024-00417", "effective_date": "2026-03-01", "annual_premium": 1234.5, "missing": "elsewhere"});
        let found = provenance(&raw, &raw, &fields, &document);
        let summary: Vec<(Option<&str>, Option<&str>)> = found
            .iter()
            .map(|entry| (entry.location.as_deref(), entry.snippet.as_deref()))
            .collect();
        assert_eq!(
            summary,
            vec![
                (Some("page 1"), Some("Policy number: HM-2024-00417")),
                (Some("page 1"), Some("Effective date: March 1, 2026")),
                (Some("page 2"), Some("Total annual premium: $1,234.50")),
                (None, None),
            ]
        );
    }
}
