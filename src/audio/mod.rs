//! Audio for transcription: the format detected from the content, the
//! multipart body of an OpenAI-compatible `/audio/transcriptions` request,
//! the reading of its answer, the decoding of compressed recordings, and
//! the splitting of long recordings at quiet points.
//!
//! No network and no async here: the interpreter sends the bodies built
//! here with the HTTP step's retry engine.

pub mod decode;
pub mod wav;

use serde::Deserialize;
use serde_json::{json, Value};

/// An audio format that OpenAI-compatible transcription endpoints accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioFormat {
    Mp3,
    /// An MPEG-4 file whose brand says audio only.
    M4a,
    Mp4,
    /// An MPEG program stream.
    Mpeg,
    Wav,
    Webm,
    Ogg,
    Flac,
}

impl AudioFormat {
    /// The file name extension the endpoint expects.
    pub fn extension(self) -> &'static str {
        match self {
            AudioFormat::Mp3 => "mp3",
            AudioFormat::M4a => "m4a",
            AudioFormat::Mp4 => "mp4",
            AudioFormat::Mpeg => "mpeg",
            AudioFormat::Wav => "wav",
            AudioFormat::Webm => "webm",
            AudioFormat::Ogg => "ogg",
            AudioFormat::Flac => "flac",
        }
    }

    pub fn mime_type(self) -> &'static str {
        match self {
            AudioFormat::Mp3 | AudioFormat::Mpeg => "audio/mpeg",
            AudioFormat::M4a => "audio/mp4",
            AudioFormat::Mp4 => "video/mp4",
            AudioFormat::Wav => "audio/wav",
            AudioFormat::Webm => "audio/webm",
            AudioFormat::Ogg => "audio/ogg",
            AudioFormat::Flac => "audio/flac",
        }
    }

    /// The extensions a file of this format may carry: `mpga` is MP3.
    fn extensions(self) -> &'static [&'static str] {
        match self {
            AudioFormat::Mp3 => &["mp3", "mpga"],
            AudioFormat::M4a => &["m4a", "mp4"],
            AudioFormat::Mp4 => &["mp4", "m4a"],
            AudioFormat::Mpeg => &["mpeg", "mpg"],
            AudioFormat::Wav => &["wav"],
            AudioFormat::Webm => &["webm"],
            AudioFormat::Ogg => &["ogg", "oga", "opus"],
            AudioFormat::Flac => &["flac"],
        }
    }
}

/// Detects the format from the first bytes of a file, or `None` when it is
/// none of the supported ones.
pub fn detect(bytes: &[u8]) -> Option<AudioFormat> {
    if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WAVE" {
        return Some(AudioFormat::Wav);
    }
    if bytes.starts_with(b"fLaC") {
        return Some(AudioFormat::Flac);
    }
    if bytes.starts_with(b"OggS") {
        return Some(AudioFormat::Ogg);
    }
    if bytes.starts_with(&[0x1a, 0x45, 0xdf, 0xa3]) {
        return Some(AudioFormat::Webm);
    }
    if bytes.len() >= 12 && &bytes[4..8] == b"ftyp" {
        let brand = &bytes[8..12];
        return Some(if brand == b"M4A " || brand == b"M4B " {
            AudioFormat::M4a
        } else {
            AudioFormat::Mp4
        });
    }
    if bytes.starts_with(&[0x00, 0x00, 0x01, 0xba]) {
        return Some(AudioFormat::Mpeg);
    }
    if bytes.starts_with(b"ID3") || (bytes.len() >= 2 && bytes[0] == 0xff && bytes[1] & 0xe0 == 0xe0) {
        return Some(AudioFormat::Mp3);
    }
    None
}

/// The file name of the upload: the source's own name when its extension
/// fits the format, else `audio.EXT`.
pub fn upload_name(source_name: Option<&str>, format: AudioFormat) -> String {
    if let Some(name) = source_name {
        if let Some((_, extension)) = name.rsplit_once('.') {
            let extension = extension.to_ascii_lowercase();
            let safe = name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ' '));
            if safe && format.extensions().contains(&extension.as_str()) {
                return name.to_string();
            }
        }
    }
    format!("audio.{}", format.extension())
}

/// The settings of one transcription request.
#[derive(Debug, Clone, PartialEq)]
pub struct TranscriptionRequest {
    pub model: String,
    pub language: Option<String>,
    pub prompt: Option<String>,
    pub temperature: Option<f64>,
    pub file_name: String,
    pub format: AudioFormat,
}

/// Builds the `multipart/form-data` body of a request, with fields in the
/// order model, language, prompt, response_format (`verbose_json`, for
/// segments and the detected language), temperature and file. Returns the
/// body and the value of its `Content-Type` header.
pub fn multipart_body(request: &TranscriptionRequest, audio: &[u8], boundary: &str) -> (Vec<u8>, String) {
    let mut body = Vec::with_capacity(audio.len() + 1024);
    let mut text_part = |name: &str, value: &str| {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
                .as_bytes(),
        );
    };
    text_part("model", &request.model);
    if let Some(language) = &request.language {
        text_part("language", language);
    }
    if let Some(prompt) = &request.prompt {
        text_part("prompt", prompt);
    }
    text_part("response_format", "verbose_json");
    if let Some(temperature) = request.temperature {
        text_part("temperature", &temperature.to_string());
    }
    let file_name = request.file_name.replace(['"', '\r', '\n'], "_");
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{file_name}\"\r\nContent-Type: {}\r\n\r\n",
            request.format.mime_type()
        )
        .as_bytes(),
    );
    body.extend_from_slice(audio);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (body, format!("multipart/form-data; boundary={boundary}"))
}

/// One timed piece of a transcript.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub start: f64,
    pub end: f64,
    pub text: String,
}

/// A transcription answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Transcript {
    pub text: String,
    pub language: Option<String>,
    pub segments: Vec<Segment>,
}

#[derive(Deserialize)]
struct RawTranscript {
    text: String,
    #[serde(default)]
    language: Option<String>,
    #[serde(default)]
    segments: Vec<RawSegment>,
}

#[derive(Deserialize)]
struct RawSegment {
    start: f64,
    end: f64,
    text: String,
}

/// Reads a `json` or `verbose_json` answer.
pub fn parse_transcript(body: &[u8]) -> Result<Transcript, String> {
    let raw: RawTranscript = serde_json::from_slice(body)
        .map_err(|error| format!("the answer is not a transcription (a JSON object with `text`): {error}"))?;
    Ok(Transcript {
        text: raw.text.trim().to_string(),
        language: raw.language.filter(|language| !language.is_empty()),
        segments: raw
            .segments
            .into_iter()
            .map(|segment| Segment {
                start: segment.start,
                end: segment.end,
                text: segment.text.trim().to_string(),
            })
            .collect(),
    })
}

/// Joins the transcripts of consecutive chunks: texts separated by a space,
/// segment times moved by each chunk's start, in seconds.
pub fn stitch(parts: &[(f64, Transcript)]) -> Transcript {
    let mut text = String::new();
    let mut segments = Vec::new();
    let mut language = None;
    for (offset, part) in parts {
        if !part.text.is_empty() {
            if !text.is_empty() {
                text.push(' ');
            }
            text.push_str(&part.text);
        }
        language = language.or_else(|| part.language.clone());
        segments.extend(part.segments.iter().map(|segment| Segment {
            start: round_millis(segment.start + offset),
            end: round_millis(segment.end + offset),
            text: segment.text.clone(),
        }));
    }
    Transcript {
        text,
        language,
        segments,
    }
}

fn round_millis(seconds: f64) -> f64 {
    (seconds * 1000.0).round() / 1000.0
}

/// The segments as written to the entity.
pub fn segments_value(segments: &[Segment]) -> Value {
    Value::Array(
        segments
            .iter()
            .map(|segment| json!({"start": segment.start, "end": segment.end, "text": segment.text}))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_detected_from_their_signatures() {
        assert_eq!(detect(b"RIFF\x24\x00\x00\x00WAVEfmt "), Some(AudioFormat::Wav));
        assert_eq!(detect(b"fLaC\x00\x00"), Some(AudioFormat::Flac));
        assert_eq!(detect(b"OggS\x00\x02"), Some(AudioFormat::Ogg));
        assert_eq!(detect(&[0x1a, 0x45, 0xdf, 0xa3, 0x01]), Some(AudioFormat::Webm));
        assert_eq!(detect(b"\x00\x00\x00\x20ftypM4A \x00"), Some(AudioFormat::M4a));
        assert_eq!(detect(b"\x00\x00\x00\x20ftypisom\x00"), Some(AudioFormat::Mp4));
        assert_eq!(detect(&[0x00, 0x00, 0x01, 0xba, 0x44]), Some(AudioFormat::Mpeg));
        assert_eq!(detect(b"ID3\x04\x00"), Some(AudioFormat::Mp3));
        assert_eq!(detect(&[0xff, 0xfb, 0x90, 0x64]), Some(AudioFormat::Mp3));
        assert_eq!(detect(b"%PDF-1.7"), None);
        assert_eq!(detect(b""), None);
    }

    #[test]
    fn upload_names_carry_the_right_extension() {
        assert_eq!(upload_name(Some("call.mpga"), AudioFormat::Mp3), "call.mpga");
        assert_eq!(upload_name(Some("call.wav"), AudioFormat::Mp3), "audio.mp3");
        assert_eq!(upload_name(Some("a\"b.mp3"), AudioFormat::Mp3), "audio.mp3");
        assert_eq!(upload_name(None, AudioFormat::M4a), "audio.m4a");
        assert_eq!(AudioFormat::Ogg.mime_type(), "audio/ogg");
    }

    #[test]
    fn the_multipart_body_has_every_field() {
        let request = TranscriptionRequest {
            model: "whisper-1".to_string(),
            language: Some("en".to_string()),
            prompt: None,
            temperature: Some(0.0),
            file_name: "call.wav".to_string(),
            format: AudioFormat::Wav,
        };
        let (body, content_type) = multipart_body(&request, b"RIFF", "b0");
        assert_eq!(content_type, "multipart/form-data; boundary=b0");
        assert_eq!(
            String::from_utf8(body).unwrap(),
            "--b0\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n\
             --b0\r\nContent-Disposition: form-data; name=\"language\"\r\n\r\nen\r\n\
             --b0\r\nContent-Disposition: form-data; name=\"response_format\"\r\n\r\nverbose_json\r\n\
             --b0\r\nContent-Disposition: form-data; name=\"temperature\"\r\n\r\n0\r\n\
             --b0\r\nContent-Disposition: form-data; name=\"file\"; filename=\"call.wav\"\r\nContent-Type: audio/wav\r\n\r\nRIFF\r\n\
             --b0--\r\n"
        );
    }

    #[test]
    fn chunks_are_stitched_with_offsets() {
        let part = |text: &str, start: f64, end: f64| Transcript {
            text: text.to_string(),
            language: Some("en".to_string()),
            segments: vec![Segment {
                start,
                end,
                text: text.to_string(),
            }],
        };
        let whole = stitch(&[(0.0, part("One.", 0.0, 1.5)), (30.25, part("Two.", 0.5, 2.0))]);
        assert_eq!(whole.text, "One. Two.");
        assert_eq!(whole.language.as_deref(), Some("en"));
        assert_eq!(
            segments_value(&whole.segments),
            json!([{"start": 0.0, "end": 1.5, "text": "One."}, {"start": 30.75, "end": 32.25, "text": "Two."}])
        );
    }
}
