//! Audio transcription against a real speech-to-text server: Whisper tiny.en
//! under faster-whisper, served on 127.0.0.1 by `tests/stt-server`, on
//! speech that espeak-ng makes. A scripted server is used only for
//! answers a real server does not give on demand (413, 429 and a refused
//! format) and to record the pieces of a decoded recording.

mod support;

use std::path::Path;

use serde_json::Value;
use support::cli::{flowrun, output, path_str, Workspace};
use support::media::{encode_flac, encode_mp3, speak, stt_server_url};
use support::server::{Reply, TestServer};

const QUARTERLY: &str = "Please send the quarterly report to the finance team by Friday morning.";
const PATIENT: &str = "The patient called to confirm the appointment for next Tuesday.";
const INVOICE: &str = "The invoice was paid in full on Monday afternoon.";

const FLOW: &str = r#"
step "Transcribe call" {
  transcribe entity.call_recording language "en" -> entity.call_transcript
  segments -> entity.call_segments
}
"#;

/// Runs `flow` with `recording` as `entity.call_recording` against the
/// OpenAI-compatible server at `base`; returns the exit code, the entity,
/// the report and standard error.
fn run(flow: &str, recording: &str, base: &str) -> (i32, Value, Value, String) {
    let workspace = Workspace::new();
    let flow = workspace.file("transcribe.flow", flow);
    let entity = workspace.file(
        "entity.json",
        serde_json::json!({ "call_recording": recording }).to_string(),
    );
    let report = workspace.dir.path().join("report.json");
    let (code, stdout, stderr) = output(
        flowrun(&[
            "run",
            path_str(&flow),
            "--entity",
            path_str(&entity),
            "--no-store",
            "--report",
            path_str(&report),
        ])
        .env("OPENAI_BASE_URL", base)
        .env_remove("OPENAI_API_KEY")
        .env_remove("FLOWRUN_LLM_PROVIDER")
        .env_remove("FLOWRUN_TRANSCRIBE_MODEL"),
    );
    let report = std::fs::read_to_string(&report)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or(Value::Null);
    (
        code,
        serde_json::from_str(&stdout).unwrap_or(Value::Null),
        report,
        stderr,
    )
}

/// The samples of a 44-byte-header WAV file that espeak-ng wrote.
fn samples(path: &Path) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[36..40], b"data", "espeak-ng writes a canonical header");
    bytes[44..].to_vec()
}

/// A mono 16-bit WAV at 22050 Hz, the format espeak-ng writes.
fn wav(samples: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + samples.len() as u32).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&22050u32.to_le_bytes());
    out.extend_from_slice(&44100u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&(samples.len() as u32).to_le_bytes());
    out.extend_from_slice(samples);
    out
}

fn words(text: &str) -> String {
    text.to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || c.is_whitespace())
        .collect()
}

#[test]
fn a_business_sentence_is_transcribed_with_segments() {
    let workspace = Workspace::new();
    let recording = workspace.dir.path().join("call.wav");
    speak(QUARTERLY, &recording);
    let (code, entity, report, stderr) = run(FLOW, path_str(&recording), &stt_server_url());
    assert_eq!(code, 0, "{stderr}");
    let transcript = words(entity["call_transcript"].as_str().unwrap());
    for keyword in ["quarterly report", "finance team", "friday morning"] {
        assert!(transcript.contains(keyword), "{transcript}");
    }
    let segments = entity["call_segments"].as_array().unwrap();
    assert!(!segments.is_empty(), "{entity}");
    for segment in segments {
        let start = segment["start"].as_f64().unwrap();
        let end = segment["end"].as_f64().unwrap();
        assert!(0.0 <= start && start < end, "{segment}");
        assert!(segment["text"].is_string(), "{segment}");
    }
    assert_eq!(report["steps"][0]["attempts"].as_array().map(Vec::len), Some(1));
}

#[test]
fn a_recording_above_the_upload_limit_is_split_and_stitched_in_order() {
    let workspace = Workspace::new();
    let mut all = Vec::new();
    let silence = vec![0u8; 22050 * 2]; // one second
    let mut first_length = 0;
    for (index, sentence) in [QUARTERLY, PATIENT, INVOICE].iter().enumerate() {
        let path = workspace.dir.path().join(format!("part{index}.wav"));
        speak(sentence, &path);
        if index > 0 {
            all.extend_from_slice(&silence);
        }
        all.extend_from_slice(&samples(&path));
        if index == 0 {
            first_length = all.len();
        }
    }
    let recording = workspace.file("long.wav", wav(&all));
    let size = std::fs::metadata(&recording).unwrap().len();
    // Each piece may hold at most about two sentences' worth of audio.
    let limit = first_length as u64 + 22050 * 2;
    assert!(size > limit * 2, "the recording must need three pieces");
    let flow = FLOW.replace(
        "  segments -> entity.call_segments\n",
        &format!("  segments -> entity.call_segments\n  upload_limit {limit}\n"),
    );
    let (code, entity, report, stderr) = run(&flow, path_str(&recording), &stt_server_url());
    assert_eq!(code, 0, "{stderr}");
    let attempts = report["steps"][0]["attempts"].as_array().unwrap();
    assert!(attempts.len() >= 3, "{report}");
    let transcript = words(entity["call_transcript"].as_str().unwrap());
    let positions: Vec<usize> = ["quarterly report", "appointment", "invoice was paid"]
        .iter()
        .map(|keyword| {
            transcript
                .find(keyword)
                .unwrap_or_else(|| panic!("`{keyword}` is missing from {transcript}"))
        })
        .collect();
    assert!(positions.windows(2).all(|pair| pair[0] < pair[1]), "{transcript}");
    let starts: Vec<f64> = entity["call_segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|segment| segment["start"].as_f64().unwrap())
        .collect();
    assert!(starts.windows(2).all(|pair| pair[0] <= pair[1]), "{starts:?}");
    // The last sentence starts after the first two and their pauses, so
    // its segment times carry the offset of its piece.
    let first_seconds = first_length as f64 / 44100.0;
    assert!(*starts.last().unwrap() > first_seconds + 1.0, "{starts:?}");
}

#[test]
fn a_silent_recording_is_an_error() {
    let workspace = Workspace::new();
    let recording = workspace.file("silent.wav", wav(&vec![0u8; 44100]));
    let (code, entity, _, stderr) = run(FLOW, path_str(&recording), "http://127.0.0.1:9/v1");
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("flow::run::transcribe_failed"), "{stderr}");
    assert!(
        stderr.contains("is silent (1.0 s with no sound), so there is nothing to transcribe"),
        "{stderr}"
    );
    assert_eq!(entity.get("call_transcript"), None);
}

#[test]
fn empty_and_unsupported_files_are_errors() {
    let workspace = Workspace::new();
    let empty = workspace.file("empty.mp3", b"");
    let (code, _, _, stderr) = run(FLOW, path_str(&empty), "http://127.0.0.1:9/v1");
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains("is empty, so there is nothing to transcribe"),
        "{stderr}"
    );
    let text = workspace.file("notes.mp3", b"not audio at all");
    let (code, _, _, stderr) = run(FLOW, path_str(&text), "http://127.0.0.1:9/v1");
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains(
            "is not a supported audio file; supported are mp3, mp4, m4a, mpeg, mpga, wav, webm, ogg and flac"
        ),
        "{stderr}"
    );
}

/// Writes three sentences with a second of silence between them as a WAV
/// file at 22050 Hz. Returns its path and the number of bytes of samples
/// of the first sentence.
fn three_sentences(workspace: &Workspace) -> (std::path::PathBuf, usize) {
    let mut all = Vec::new();
    let silence = vec![0u8; 22050 * 2];
    let mut first_length = 0;
    for (index, sentence) in [QUARTERLY, PATIENT, INVOICE].iter().enumerate() {
        let path = workspace.dir.path().join(format!("part{index}.wav"));
        speak(sentence, &path);
        if index > 0 {
            all.extend_from_slice(&silence);
        }
        all.extend_from_slice(&samples(&path));
        if index == 0 {
            first_length = all.len();
        }
    }
    (workspace.file("long.wav", wav(&all)), first_length)
}

/// Computes an upload limit that lets a piece of the decoded recording
/// (16-bit mono at 16 kHz) contain the first sentence and one more second
/// but not two sentences, so the recording needs three pieces.
fn decoded_limit(first_length: usize) -> u64 {
    (first_length as u64 / 2) * 16_000 / 22_050 * 2 + 32_000
}

#[test]
fn compressed_recordings_are_split_and_stitched() {
    let workspace = Workspace::new();
    let (long_wav, first_length) = three_sentences(&workspace);
    let limit = decoded_limit(first_length);
    let flac = workspace.dir.path().join("call.flac");
    encode_flac(&long_wav, &flac);
    let mp3 = workspace.dir.path().join("call.mp3");
    encode_mp3(&long_wav, &mp3);
    for recording in [flac, mp3] {
        let size = std::fs::metadata(&recording).unwrap().len();
        assert!(
            size > limit,
            "{recording:?} ({size} bytes) must be above the limit ({limit})"
        );
        let flow = FLOW.replace(
            "  segments -> entity.call_segments\n",
            &format!("  segments -> entity.call_segments\n  upload_limit {limit}\n"),
        );
        let (code, entity, report, stderr) = run(&flow, path_str(&recording), &stt_server_url());
        assert_eq!(code, 0, "{recording:?}: {stderr}");
        let attempts = report["steps"][0]["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 3, "{recording:?}: {report}");
        let transcript = words(entity["call_transcript"].as_str().unwrap());
        let positions: Vec<usize> = [
            "quarterly report",
            "finance team",
            "patient called",
            "appointment",
            "invoice was paid",
            "monday afternoon",
        ]
        .iter()
        .map(|keyword| {
            transcript
                .find(keyword)
                .unwrap_or_else(|| panic!("{recording:?}: `{keyword}` is missing from {transcript}"))
        })
        .collect();
        assert!(positions.windows(2).all(|pair| pair[0] < pair[1]), "{transcript}");
        let starts: Vec<f64> = entity["call_segments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|segment| segment["start"].as_f64().unwrap())
            .collect();
        assert!(starts.windows(2).all(|pair| pair[0] <= pair[1]), "{starts:?}");
        // The last sentence starts after the first two and their pauses.
        let first_seconds = first_length as f64 / 44100.0;
        assert!(*starts.last().unwrap() > first_seconds + 1.0, "{starts:?}");
    }
}

#[test]
fn decoded_pieces_are_sent_as_wav() {
    let workspace = Workspace::new();
    let (long_wav, first_length) = three_sentences(&workspace);
    let recording = workspace.dir.path().join("call.flac");
    encode_flac(&long_wav, &recording);
    let limit = decoded_limit(first_length);

    let server = TestServer::scripted(vec![
        Reply::json(
            200,
            serde_json::json!({"text": "One.", "segments": [{"start": 0.5, "end": 1.0, "text": "One."}]}),
        ),
        Reply::json(
            200,
            serde_json::json!({"text": "Two.", "segments": [{"start": 0.5, "end": 1.0, "text": "Two."}]}),
        ),
        Reply::json(
            200,
            serde_json::json!({"text": "Three.", "segments": [{"start": 0.5, "end": 1.0, "text": "Three."}]}),
        ),
    ]);
    let flow = FLOW.replace(
        "  segments -> entity.call_segments\n",
        &format!("  segments -> entity.call_segments\n  upload_limit {limit}\n"),
    );
    let (code, entity, _, stderr) = run(&flow, path_str(&recording), &format!("{}/v1", server.url()));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(entity["call_transcript"], "One. Two. Three.");

    let requests = server.requests();
    assert_eq!(requests.len(), 3);
    let mut offset = 0.0;
    let mut offsets = Vec::new();
    for (index, request) in requests.iter().enumerate() {
        let body = &request.body;
        let head = format!(
            "Content-Disposition: form-data; name=\"file\"; filename=\"part{}-audio.wav\"\r\nContent-Type: audio/wav\r\n\r\n",
            index + 1
        );
        let at = body
            .windows(head.len())
            .position(|window| window == head.as_bytes())
            .unwrap_or_else(|| panic!("request {index} has no WAV file part"));
        let file = &body[at + head.len()..];
        assert_eq!(&file[..4], b"RIFF");
        assert_eq!(&file[8..16], b"WAVEfmt ");
        // Mono, 16 kHz, 16 bits.
        assert_eq!(u16::from_le_bytes([file[22], file[23]]), 1);
        assert_eq!(
            u32::from_le_bytes([file[24], file[25], file[26], file[27]]),
            16_000
        );
        assert_eq!(u16::from_le_bytes([file[34], file[35]]), 16);
        let data = u32::from_le_bytes([file[40], file[41], file[42], file[43]]) as u64;
        assert!(data + 44 <= limit, "piece {index} holds {data} bytes of samples");
        offsets.push(offset);
        offset += data as f64 / 32_000.0;
    }

    // Each segment starts 0.5 s into its piece.
    let starts: Vec<f64> = entity["call_segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|segment| segment["start"].as_f64().unwrap())
        .collect();
    let expected: Vec<f64> = offsets
        .iter()
        .map(|offset| ((offset + 0.5) * 1000.0).round() / 1000.0)
        .collect();
    assert_eq!(starts, expected);
}

#[test]
fn undecodable_file_above_limit_is_named() {
    let workspace = Workspace::new();
    let mut mp3 = b"ID3\x04\x00\x00\x00\x00\x00\x00".to_vec();
    mp3.resize(4096, 0);
    let recording = workspace.file("call.mp3", mp3);
    let flow = FLOW.replace("  segments", "  upload_limit 2KB\n  segments");
    let (code, _, _, stderr) = run(&flow, path_str(&recording), "http://127.0.0.1:9/v1");
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains(
            "is 4096 bytes, more than the upload limit of 2048 bytes, and cannot be decoded to be split:"
        ),
        "{stderr}"
    );
}

fn speech_file(workspace: &Workspace) -> String {
    let recording = workspace.dir.path().join("call.wav");
    speak(INVOICE, &recording);
    path_str(&recording).to_string()
}

#[test]
fn the_request_is_multipart_with_the_file_name_and_media_type() {
    let workspace = Workspace::new();
    let recording = speech_file(&workspace);
    let server = TestServer::scripted(vec![Reply::json(
        200,
        serde_json::json!({"text": "Paid.", "language": "english", "segments": [{"start": 0.0, "end": 1.0, "text": "Paid."}]}),
    )]);
    let flow = r#"
step "Transcribe call" {
  transcribe entity.call_recording language "en" -> entity.call_transcript
  model "whisper-large-v3"
  prompt "Invoice terms"
  detected_language -> entity.call_language
  temperature 0.2
}
"#;
    let (code, entity, _, stderr) = run(flow, &recording, &format!("{}/v1", server.url()));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(entity["call_transcript"], "Paid.");
    assert_eq!(entity["call_language"], "english");
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.target, "/v1/audio/transcriptions");
    let content_type = request.header("content-type").unwrap();
    let boundary = content_type
        .strip_prefix("multipart/form-data; boundary=")
        .expect("a multipart body");
    let body = String::from_utf8_lossy(&request.body);
    let field = |name: &str, value: &str| {
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
    };
    let expected_head = [
        field("model", "whisper-large-v3"),
        field("language", "en"),
        field("prompt", "Invoice terms"),
        field("response_format", "verbose_json"),
        field("temperature", "0.2"),
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"call.wav\"\r\nContent-Type: audio/wav\r\n\r\nRIFF"),
    ]
    .concat();
    assert!(
        body.starts_with(&expected_head),
        "{}",
        &body[..400.min(body.len())]
    );
    let audio = std::fs::read(&recording).unwrap();
    assert_eq!(
        request.body.len(),
        expected_head.len() - 4 + audio.len() + format!("\r\n--{boundary}--\r\n").len()
    );
    assert!(body.ends_with(&format!("\r\n--{boundary}--\r\n")));
}

#[test]
fn payload_too_large_is_not_retried() {
    let workspace = Workspace::new();
    let recording = speech_file(&workspace);
    let server = TestServer::scripted(vec![Reply::json(
        413,
        serde_json::json!({"error": {"message": "Maximum content size limit exceeded"}}),
    )]);
    let (code, _, report, stderr) = run(FLOW, &recording, &format!("{}/v1", server.url()));
    assert_eq!(code, 3, "{stderr}");
    assert_eq!(server.request_count(), 1);
    assert_eq!(report["steps"][0]["attempts"].as_array().map(Vec::len), Some(1));
    assert!(
        stderr.contains("the provider rejected the audio as too large (413 Payload Too Large)"),
        "{stderr}"
    );
}

#[test]
fn too_many_requests_waits_for_retry_after() {
    let workspace = Workspace::new();
    let recording = speech_file(&workspace);
    let server = TestServer::scripted(vec![
        Reply::json(429, serde_json::json!({"error": {"message": "slow down"}})).header("Retry-After", "1"),
        Reply::json(200, serde_json::json!({"text": "The invoice was paid."})),
    ]);
    let (code, entity, report, stderr) = run(FLOW, &recording, &format!("{}/v1", server.url()));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(server.request_count(), 2);
    assert_eq!(entity["call_transcript"], "The invoice was paid.");
    assert_eq!(entity["call_segments"], serde_json::json!([]));
    let attempts = report["steps"][0]["attempts"].as_array().unwrap();
    assert_eq!(attempts[0]["status"], 429);
    assert_eq!(attempts[1]["waited"], 1000);
    assert_eq!(attempts[1]["status"], 200);
}

#[test]
fn a_refused_format_names_the_provider_message() {
    let workspace = Workspace::new();
    let recording = speech_file(&workspace);
    let server = TestServer::scripted(vec![Reply::json(
        400,
        serde_json::json!({"error": {"message": "Invalid file format. Supported formats: ['flac', 'mp3']"}}),
    )]);
    let (code, _, _, stderr) = run(FLOW, &recording, &format!("{}/v1", server.url()));
    assert_eq!(code, 3, "{stderr}");
    assert_eq!(server.request_count(), 1);
    assert!(
        stderr.contains("the provider rejected the audio with 400 Bad Request"),
        "{stderr}"
    );
    assert!(stderr.contains("Invalid file format"), "{stderr}");
}
