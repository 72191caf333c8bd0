//! Runs a `transcribe` action. It loads the audio and splits a recording
//! larger than the upload limit at quiet points, after decoding it to WAV
//! when it is compressed. Each piece goes in order to an
//! OpenAI-compatible `/audio/transcriptions` endpoint with the retry rules
//! of model calls, and the stitched transcript is written.

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use serde_json::Value;
use tracing::info;

use crate::audio::{self, decode, wav, AudioFormat, Transcript, TranscriptionRequest};
use crate::diagnostic::{Code, Diagnostic};
use crate::llm::ProviderKind;
use crate::program::{LlmTarget, Settings, TranscribeCall};
use crate::render;
use crate::run::errors::{failure_diagnostic_for, render_diagnostic};
use crate::run::http::{self, Failure, Outgoing};
use crate::run::llm::{self, CallContext, Provider};
use crate::run::media::{self, Records};
use crate::run::report::RenderedRequest;
use crate::run::save::set_path;
use crate::run::Execution;

/// The model of actions that name none, when `FLOWRUN_TRANSCRIBE_MODEL` is
/// not set.
pub const DEFAULT_MODEL: &str = "whisper-1";

/// Runs one `transcribe` action.
pub(crate) async fn run(
    call: &TranscribeCall,
    context: &CallContext<'_>,
    execution: &mut Execution,
    records: &mut Records<'_>,
) -> Result<(), Diagnostic> {
    let fail = |message: String, help: &str| {
        Diagnostic::error(Code::TranscribeFailed, message)
            .with_label(call.span, "this transcribe action")
            .with_help(help.to_string())
    };
    let reference = media::reference(&call.source, execution, call.span)?;
    let prompt = match &call.prompt {
        Some(template) => Some(
            render::render(template, &execution.scope())
                .map_err(|error| render_diagnostic(&error, context.lines, &execution.redactor))?,
        ),
        None => None,
    };
    let provider =
        llm::resolve_provider(context.program, call.provider.as_deref(), execution).map_err(|message| {
            Diagnostic::error(Code::LlmFailed, message)
                .with_label(call.span, "this transcribe action")
                .with_help("configure the provider in the workflow, flowrun.toml or the environment")
        })?;
    if provider.kind != ProviderKind::OpenAi {
        return Err(fail(
            format!(
                "provider `{}` speaks the Anthropic API, which has no transcription endpoint",
                provider.name
            ),
            "use a provider of `kind openai` whose server offers /audio/transcriptions",
        ));
    }
    let model = call
        .model
        .clone()
        .or_else(|| execution.env.get("FLOWRUN_TRANSCRIBE_MODEL").cloned())
        .unwrap_or_else(|| DEFAULT_MODEL.to_string());

    if context.dry_run {
        records.dry_run.push(RenderedRequest {
            step: context.step.name.clone(),
            method: "POST".to_string(),
            url: execution.redactor.redact(&endpoint(&provider.base_url)),
            headers: Vec::new(),
            body: None,
            error: None,
        });
        let placeholder = Transcript {
            text: "<transcript>".to_string(),
            language: None,
            segments: Vec::new(),
        };
        write_all(call, &placeholder, execution)
            .map_err(|message| fail(message, "check the targets of `->`"))?;
        return Ok(());
    }

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
    if loaded.bytes.is_empty() {
        return Err(fail(
            format!("{} is empty, so there is nothing to transcribe", loaded.display),
            "check that the recording was saved completely",
        ));
    }
    let Some(format) = audio::detect(&loaded.bytes) else {
        return Err(fail(
            format!(
                "{} is not a supported audio file; supported are mp3, mp4, m4a, mpeg, mpga, wav, webm, ogg and flac",
                loaded.display
            ),
            "convert the recording, for example with `ffmpeg -i INPUT output.mp3`",
        ));
    };
    // A compressed recording above the limit is decoded to WAV, which is
    // then checked and split like a WAV recording.
    let (recording, upload_format) = if format == AudioFormat::Wav
        || loaded.bytes.len() as u64 <= params.upload_limit
    {
        (loaded.bytes.clone(), format)
    } else {
        let bytes = loaded.bytes.clone();
        let decoded = tokio::task::spawn_blocking(move || decode::to_wav(bytes, format))
                .await
                .map_err(|error| {
                    fail(
                        format!("decoding the audio failed: {error}"),
                        "report this as a bug",
                    )
                })?
                .map_err(|reason| {
                    fail(
                        format!(
                            "{} is {} bytes, more than the upload limit of {} bytes, and cannot be decoded to be split: {reason}",
                            loaded.display,
                            loaded.bytes.len(),
                            params.upload_limit
                        ),
                        "convert it to WAV, MP3 or FLAC, or raise `upload_limit` if the provider accepts larger files",
                    )
                })?;
        info!(
            step = %context.step.name,
            "decoded {} ({}) into {} bytes of mono 16-bit WAV",
            loaded.display,
            format.extension(),
            decoded.len()
        );
        (Bytes::from(decoded), AudioFormat::Wav)
    };
    let pieces: Vec<(f64, Bytes)> = if upload_format == AudioFormat::Wav {
        let parsed = wav::parse(&recording).map_err(|reason| {
            fail(
                format!("{} cannot be decoded: {reason}", loaded.display),
                "convert it to 16-bit PCM WAV, MP3 or FLAC",
            )
        })?;
        if parsed.frames() == 0 || parsed.is_silent(&recording) {
            return Err(fail(
                format!(
                    "{} is silent ({:.1} s with no sound), so there is nothing to transcribe",
                    loaded.display,
                    parsed.duration_seconds()
                ),
                "check the recording's input level, or that the right file is referenced",
            ));
        }
        if recording.len() as u64 > params.upload_limit {
            let bytes = recording.clone();
            let limit = params.upload_limit;
            let split = tokio::task::spawn_blocking(move || wav::split(&bytes, limit))
                .await
                .map_err(|error| {
                    fail(
                        format!("splitting the audio failed: {error}"),
                        "report this as a bug",
                    )
                })?
                .map_err(|reason| {
                    fail(
                        format!("{} cannot be split: {reason}", loaded.display),
                        "raise `upload_limit`",
                    )
                })?;
            info!(step = %context.step.name, "split {} into {} pieces of at most {limit} bytes", loaded.display, split.len());
            split
                .into_iter()
                .map(|(offset, piece)| (offset, Bytes::from(piece)))
                .collect()
        } else {
            vec![(0.0, recording)]
        }
    } else {
        vec![(0.0, recording)]
    };

    let file_name = audio::upload_name(loaded.name.as_deref(), upload_format);
    let mut parts = Vec::new();
    let count = pieces.len();
    for (index, (offset, piece)) in pieces.into_iter().enumerate() {
        let request = TranscriptionRequest {
            model: model.clone(),
            language: call.language.clone(),
            prompt: prompt.clone(),
            temperature: context.step.settings.llm.temperature,
            file_name: if count > 1 {
                format!("part{}-{}", index + 1, audio::upload_name(None, upload_format))
            } else {
                file_name.clone()
            },
            format: upload_format,
        };
        let transcript = send(
            &provider, &request, &piece, context, execution, records, call, index, count,
        )
        .await?;
        parts.push((offset, transcript));
    }
    let transcript = audio::stitch(&parts);
    if transcript.text.trim().is_empty() {
        return Err(fail(
            format!(
                "{} produced no transcript: the audio is empty or silent, or holds no speech",
                loaded.display
            ),
            "check the recording, or that the right file is referenced",
        ));
    }
    let transcript = Transcript {
        text: execution.redactor.redact(&transcript.text),
        ..transcript
    };
    write_all(call, &transcript, execution).map_err(|message| fail(message, "check the targets of `->`"))
}

/// Builds the URL of the transcription endpoint under a base URL.
fn endpoint(base_url: &str) -> String {
    let (base, query) = match base_url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (base_url, None),
    };
    let path = format!("{}/audio/transcriptions", base.trim_end_matches('/'));
    match query {
        Some(query) => format!("{path}?{query}"),
        None => path,
    }
}

#[allow(clippy::too_many_arguments)]
async fn send(
    provider: &Provider,
    request: &TranscriptionRequest,
    audio_bytes: &[u8],
    context: &CallContext<'_>,
    execution: &Execution,
    records: &mut Records<'_>,
    call: &TranscribeCall,
    index: usize,
    count: usize,
) -> Result<Transcript, Diagnostic> {
    let fail = |message: String, help: &str| {
        Diagnostic::error(Code::TranscribeFailed, message)
            .with_label(call.span, "this transcribe action")
            .with_help(help.to_string())
    };
    let boundary = format!("flowrun-{}", uuid::Uuid::new_v4().simple());
    let (body, content_type) = audio::multipart_body(request, audio_bytes, &boundary);
    let url_text = endpoint(&provider.base_url);
    let url = reqwest::Url::parse(&url_text).map_err(|error| {
        fail(
            format!(
                "provider `{}` has an invalid URL `{}`: {error}",
                provider.name,
                execution.redactor.redact(&url_text)
            ),
            "check the provider's base URL",
        )
    })?;
    let mut headers = HeaderMap::new();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_str(&content_type)
            .map_err(|_| fail("invalid multipart boundary".to_string(), "report this as a bug"))?,
    );
    for (name, value) in crate::llm::openai::headers(provider.api_key.as_deref()) {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| fail(format!("invalid header name `{name}`"), "report this as a bug"))?;
        let value = HeaderValue::from_str(&value).map_err(|_| {
            fail(
                format!(
                    "provider `{}` has an API key that is not a valid header value",
                    provider.name
                ),
                "check the API key",
            )
        })?;
        headers.insert(name, value);
    }
    let outgoing = Outgoing {
        method: reqwest::Method::POST,
        display_url: execution.redactor.redact(url.as_str()),
        url,
        headers,
        body: Some(Bytes::from(body)),
    };
    // A transcription changes nothing at the provider, so it is retried
    // like a model call.
    let settings = Settings {
        retry_server_errors: true,
        retry_connection_errors: true,
        retry_interrupted: true,
        ..context.step.settings.clone()
    };
    let redact = |text: &str| execution.redactor.redact(text);
    let http_context = http::Context {
        step: &context.step.name,
        action: context.action,
        sleeper: context.sleeper,
        redact: &redact,
    };
    let piece = if count > 1 {
        format!(" (piece {} of {count})", index + 1)
    } else {
        String::new()
    };
    let exchange = http::send(context.http, &outgoing, &settings, &http_context, records.attempts)
        .await
        .map_err(|failure| match &failure {
            Failure::Status(exchange) if exchange.status.as_u16() == 413 => fail(
                format!(
                    "the provider rejected the audio{piece} as too large (413 Payload Too Large); it was {} bytes",
                    audio_bytes.len()
                ),
                "lower the step's `upload_limit` below the provider's limit, so that flowrun splits the audio; 413 is not retried",
            ),
            Failure::Status(exchange) if exchange.status.as_u16() == 400 || exchange.status.as_u16() == 415 => {
                let message = String::from_utf8_lossy(&exchange.body);
                fail(
                    format!(
                        "the provider rejected the audio{piece} with {}: {}",
                        exchange.status,
                        execution.redactor.redact(message.chars().take(300).collect::<String>().trim())
                    ),
                    "check that the provider accepts this format; convert the recording to mp3 or wav",
                )
            }
            _ => failure_diagnostic_for(&failure, &outgoing, call.span, &execution.redactor),
        })?;
    audio::parse_transcript(&exchange.body).map_err(|reason| {
        fail(
            format!(
                "provider `{}` answered{piece} with a body that is not a transcription: {reason}",
                provider.name
            ),
            "check that the provider's base URL points at an OpenAI-compatible API",
        )
    })
}

fn write_all(
    call: &TranscribeCall,
    transcript: &Transcript,
    execution: &mut Execution,
) -> Result<(), String> {
    let writes = [
        (&call.transcript, Value::String(transcript.text.clone())),
        (&call.segments, audio::segments_value(&transcript.segments)),
        (
            &call.detected_language,
            transcript.language.clone().map_or(Value::Null, Value::String),
        ),
    ];
    for (target, value) in writes {
        match target {
            None => {}
            Some(LlmTarget::Variable(name)) => {
                execution.vars.insert(name.clone(), value);
                execution.secret_vars.remove(name);
            }
            Some(LlmTarget::Entity(path)) => {
                let mut entity = execution.entity.clone();
                set_path(&mut entity, path, value)?;
                execution.entity = entity;
            }
            Some(LlmTarget::EntityMembers) => return Err("a transcript goes to one field".to_string()),
        }
    }
    Ok(())
}
