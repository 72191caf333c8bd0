//! The OpenAI chat completions protocol (`POST /v1/chat/completions`), as
//! served by OpenAI and by compatible servers such as Ollama, vLLM and
//! llama.cpp.
//!
//! This module only builds request bodies and reads response bodies. The
//! caller sends the request and checks the HTTP status.

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{ChatRequest, Completion, FinishReason, ProtocolError, Role, Usage};

/// OpenAI's own base URL. Compatible servers take their base URL from the
/// configuration instead, such as `http://127.0.0.1:8080/v1`.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

/// The protocol name in [`ProtocolError`] messages.
const PROTOCOL: &str = "OpenAI chat completions";

/// Builds the chat completions URL from a base URL that already contains the
/// API version path, such as `https://api.openai.com/v1`.
pub fn endpoint(base_url: &str) -> String {
    // A query, such as Azure OpenAI's `api-version`, stays after the path.
    let (base, query) = match base_url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (base_url, None),
    };
    let path = format!("{}/chat/completions", base.trim_end_matches('/'));
    match query {
        Some(query) => format!("{path}?{query}"),
        None => path,
    }
}

/// Builds the request headers other than `Content-Type`.
///
/// Local servers such as Ollama and llama.cpp accept requests without a key,
/// so an absent or empty key sends no `authorization` header.
pub fn headers(api_key: Option<&str>) -> Vec<(String, String)> {
    match api_key {
        Some(key) if !key.is_empty() => vec![("authorization".to_string(), format!("Bearer {key}"))],
        _ => Vec::new(),
    }
}

/// Builds the JSON request body. Optional settings the request leaves unset
/// are left out of the body, so the server applies its own defaults.
///
/// Structured output uses `response_format` of type `json_schema` with
/// `strict: true`. OpenAI's strict mode rejects a schema unless every object
/// in it sets `additionalProperties: false` and lists all of its properties
/// in `required`.
pub fn request_body(request: &ChatRequest) -> Value {
    let mut messages = Vec::with_capacity(request.messages.len() + 1);
    if let Some(system) = &request.system {
        messages.push(json!({ "role": "system", "content": system }));
    }
    let first_user = request
        .messages
        .iter()
        .position(|message| message.role == crate::llm::Role::User);
    for (index, message) in request.messages.iter().enumerate() {
        let content = if Some(index) == first_user && !request.images.is_empty() {
            let mut parts = vec![json!({ "type": "text", "text": message.content })];
            for image in &request.images {
                let url = format!("data:{};base64,{}", image.media_type, image.base64());
                parts.push(json!({ "type": "image_url", "image_url": { "url": url } }));
            }
            Value::Array(parts)
        } else {
            json!(message.content)
        };
        messages.push(json!({ "role": role_name(message.role), "content": content }));
    }

    let mut body = Map::new();
    body.insert("model".to_string(), json!(request.model));
    body.insert("messages".to_string(), Value::Array(messages));

    // `max_tokens` rather than its successor `max_completion_tokens`, because
    // most OpenAI-compatible local servers only read `max_tokens`.
    // NOTE: OpenAI's o-series reasoning models reject `max_tokens` and accept
    // only `max_completion_tokens`, so a request to them with a limit fails.
    if let Some(max_tokens) = request.max_tokens {
        body.insert("max_tokens".to_string(), json!(max_tokens));
    }
    if let Some(temperature) = request.temperature {
        body.insert("temperature".to_string(), json!(temperature));
    }
    if let Some(top_p) = request.top_p {
        body.insert("top_p".to_string(), json!(top_p));
    }
    if let Some(seed) = request.seed {
        body.insert("seed".to_string(), json!(seed));
    }

    if let Some(structured) = &request.structured {
        let response_format = json!({
            "type": "json_schema",
            "json_schema": {
                "name": structured.name,
                "schema": structured.schema,
                "strict": true,
            },
        });
        body.insert("response_format".to_string(), response_format);
    }

    Value::Object(body)
}

/// Parses the body of a 2xx response into a [`Completion`].
///
/// Only the first choice is read, because the request body never sets `n`,
/// so the server returns one choice. A non-null `refusal` makes the finish reason
/// [`FinishReason::Refusal`] whatever `finish_reason` says, because OpenAI
/// reports refusals under structured output with `finish_reason: "stop"`.
///
/// # Errors
///
/// Returns a [`ProtocolError`] when the body is not JSON, has an unexpected
/// shape, is an error object, or has no choice with a message.
pub fn parse_response(body: &[u8]) -> Result<Completion, ProtocolError> {
    let response: ResponseBody = super::read_object(body, PROTOCOL)?;

    // OpenAI sends errors with a 4xx or 5xx status. This check keeps an error
    // object that a compatible server or proxy sends with a 2xx status from
    // being reported as a missing `choices` array.
    if let Some(error) = &response.error {
        return Err(protocol_error(describe_error_object(error)));
    }

    let choices = response
        .choices
        .ok_or_else(|| protocol_error("the body has no `choices` array".to_string()))?;
    let choice = choices
        .into_iter()
        .next()
        .ok_or_else(|| protocol_error("the `choices` array is empty".to_string()))?;
    let message = choice
        .message
        .ok_or_else(|| protocol_error("`choices[0]` has no `message`".to_string()))?;

    let finish_raw = choice.finish_reason.unwrap_or_default();
    let finish = if message.refusal.is_some() {
        FinishReason::Refusal
    } else {
        finish_reason(&finish_raw)
    };

    let usage = response.usage.unwrap_or_default();
    Ok(Completion {
        text: message.content.unwrap_or_default(),
        finish,
        finish_raw,
        refusal: message.refusal,
        usage: Usage {
            prompt_tokens: usage.prompt_tokens.unwrap_or(0),
            completion_tokens: usage.completion_tokens.unwrap_or(0),
        },
        model: response.model.unwrap_or_default(),
    })
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::User => "user",
        Role::Assistant => "assistant",
    }
}

/// Maps OpenAI's `finish_reason`. Values such as `tool_calls` and the older
/// `function_call` are unexpected because the request body offers no tools,
/// so they map to [`FinishReason::Other`] with the raw value kept for messages.
fn finish_reason(raw: &str) -> FinishReason {
    match raw {
        "stop" => FinishReason::Stop,
        "length" => FinishReason::Length,
        "content_filter" => FinishReason::ContentFilter,
        _ => FinishReason::Other,
    }
}

fn protocol_error(reason: String) -> ProtocolError {
    ProtocolError {
        protocol: PROTOCOL,
        reason,
    }
}

/// Describes an `error` member, which OpenAI writes as an object with `type`
/// and `message` and some compatible servers write as a plain string.
fn describe_error_object(error: &Value) -> String {
    if let Some(text) = error.as_str() {
        return format!("the body is an error object: {text}");
    }
    let kind = error.get("type").and_then(Value::as_str);
    let message = error.get("message").and_then(Value::as_str);
    match (kind, message) {
        (Some(kind), Some(message)) => format!("the body is an error object of type `{kind}`: {message}"),
        (None, Some(message)) => format!("the body is an error object: {message}"),
        _ => format!("the body is an error object: {error}"),
    }
}

/// The members of a chat completion that this module reads. Every member is
/// optional here so that a missing one gets a precise error or a default
/// rather than a generic deserialization error.
#[derive(Deserialize)]
struct ResponseBody {
    choices: Option<Vec<Choice>>,
    usage: Option<ResponseUsage>,
    model: Option<String>,
    error: Option<Value>,
}

#[derive(Deserialize)]
struct Choice {
    message: Option<ResponseMessage>,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct ResponseMessage {
    /// Null when the model refused or only called tools.
    content: Option<String>,
    /// The refusal message. OpenAI added this member together with
    /// structured outputs in August 2024, so servers that follow the older
    /// API leave it out.
    refusal: Option<String>,
}

#[derive(Deserialize, Default)]
struct ResponseUsage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::{Message, StructuredOutput};

    fn minimal_request() -> ChatRequest {
        ChatRequest::hello("gpt-4o-mini")
    }

    fn parse_value(body: Value) -> Result<Completion, ProtocolError> {
        parse_response(body.to_string().as_bytes())
    }

    fn error_reason(body: &[u8]) -> String {
        parse_response(body)
            .expect_err("the body should be rejected")
            .reason
    }

    #[test]
    fn endpoint_appends_path() {
        assert_eq!(
            endpoint("https://api.openai.com/v1"),
            "https://api.openai.com/v1/chat/completions"
        );
        assert_eq!(
            endpoint("http://127.0.0.1:8080/v1"),
            "http://127.0.0.1:8080/v1/chat/completions"
        );
    }

    #[test]
    fn endpoint_tolerates_trailing_slash() {
        assert_eq!(
            endpoint("https://api.openai.com/v1/"),
            "https://api.openai.com/v1/chat/completions"
        );
        assert_eq!(
            endpoint("http://127.0.0.1:8080/v1//"),
            "http://127.0.0.1:8080/v1/chat/completions"
        );
    }

    #[test]
    fn endpoint_of_default_base_url() {
        assert_eq!(
            endpoint(DEFAULT_BASE_URL),
            "https://api.openai.com/v1/chat/completions"
        );
    }

    #[test]
    fn headers_with_key() {
        assert_eq!(
            headers(Some("sk-test")),
            vec![("authorization".to_string(), "Bearer sk-test".to_string())]
        );
    }

    #[test]
    fn headers_without_key() {
        assert!(headers(None).is_empty());
        assert!(headers(Some("")).is_empty());
    }

    #[test]
    fn request_body_full() {
        let request = ChatRequest {
            model: "gpt-4o".to_string(),
            system: Some("You classify claims.".to_string()),
            messages: vec![
                Message {
                    role: Role::User,
                    content: "Claim 1".to_string(),
                },
                Message {
                    role: Role::Assistant,
                    content: "auto".to_string(),
                },
                Message {
                    role: Role::User,
                    content: "Claim 2".to_string(),
                },
            ],
            max_tokens: Some(256),
            temperature: Some(0.2),
            top_p: Some(0.9),
            seed: Some(42),
            structured: None,
            images: Vec::new(),
        };

        assert_eq!(
            request_body(&request),
            json!({
                "model": "gpt-4o",
                "messages": [
                    { "role": "system", "content": "You classify claims." },
                    { "role": "user", "content": "Claim 1" },
                    { "role": "assistant", "content": "auto" },
                    { "role": "user", "content": "Claim 2" },
                ],
                "max_tokens": 256,
                "temperature": 0.2,
                "top_p": 0.9,
                "seed": 42,
            })
        );
    }

    #[test]
    fn request_body_minimal() {
        let body = request_body(&minimal_request());

        assert_eq!(
            body,
            json!({
                "model": "gpt-4o-mini",
                "messages": [{ "role": "user", "content": "Hello" }],
            })
        );
        for absent in ["max_tokens", "temperature", "top_p", "seed", "response_format"] {
            assert!(
                body.get(absent).is_none(),
                "`{absent}` should be absent from {body}"
            );
        }
    }

    #[test]
    fn request_body_structured() {
        let schema = json!({
            "type": "object",
            "properties": { "claim_type": { "type": "string", "enum": ["auto", "home"] } },
            "required": ["claim_type"],
            "additionalProperties": false,
        });
        let request = ChatRequest {
            structured: Some(StructuredOutput {
                name: "claim_type".to_string(),
                schema: schema.clone(),
            }),
            ..minimal_request()
        };

        assert_eq!(
            request_body(&request),
            json!({
                "model": "gpt-4o-mini",
                "messages": [{ "role": "user", "content": "Hello" }],
                "response_format": {
                    "type": "json_schema",
                    "json_schema": { "name": "claim_type", "schema": schema, "strict": true },
                },
            })
        );
    }

    #[test]
    fn parse_normal_text() {
        let completion = parse_value(json!({
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "model": "gpt-4o-2024-08-06",
            "choices": [{
                "index": 0,
                "message": { "role": "assistant", "content": "Hello there", "refusal": null },
                "finish_reason": "stop",
            }],
            "usage": { "prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15 },
        }))
        .unwrap();

        assert_eq!(
            completion,
            Completion {
                text: "Hello there".to_string(),
                finish: FinishReason::Stop,
                finish_raw: "stop".to_string(),
                refusal: None,
                usage: Usage {
                    prompt_tokens: 12,
                    completion_tokens: 3
                },
                model: "gpt-4o-2024-08-06".to_string(),
            }
        );
    }

    #[test]
    fn parse_length() {
        let completion = parse_value(json!({
            "model": "gpt-4o",
            "choices": [{ "message": { "content": "Hello th" }, "finish_reason": "length" }],
            "usage": { "prompt_tokens": 12, "completion_tokens": 2 },
        }))
        .unwrap();

        assert_eq!(completion.text, "Hello th");
        assert_eq!(completion.finish, FinishReason::Length);
        assert_eq!(completion.finish_raw, "length");
    }

    #[test]
    fn parse_refusal_overrides_stop() {
        let completion = parse_value(json!({
            "model": "gpt-4o",
            "choices": [{
                "message": { "role": "assistant", "content": null, "refusal": "I can't help with that." },
                "finish_reason": "stop",
            }],
            "usage": { "prompt_tokens": 20, "completion_tokens": 7 },
        }))
        .unwrap();

        assert_eq!(completion.finish, FinishReason::Refusal);
        assert_eq!(completion.finish_raw, "stop");
        assert_eq!(completion.refusal.as_deref(), Some("I can't help with that."));
        assert_eq!(completion.text, "");
    }

    #[test]
    fn parse_content_filter() {
        let completion = parse_value(json!({
            "model": "gpt-4o",
            "choices": [{ "message": { "content": null }, "finish_reason": "content_filter" }],
        }))
        .unwrap();

        assert_eq!(completion.finish, FinishReason::ContentFilter);
        assert_eq!(completion.finish_raw, "content_filter");
        assert_eq!(completion.text, "");
        assert_eq!(completion.refusal, None);
    }

    #[test]
    fn parse_unknown_finish_reason() {
        let completion = parse_value(json!({
            "model": "gpt-4o",
            "choices": [{ "message": { "content": null, "tool_calls": [] }, "finish_reason": "tool_calls" }],
        }))
        .unwrap();

        assert_eq!(completion.finish, FinishReason::Other);
        assert_eq!(completion.finish_raw, "tool_calls");
    }

    #[test]
    fn parse_null_content_with_stop() {
        let completion = parse_value(json!({
            "model": "gpt-4o",
            "choices": [{ "message": { "content": null, "refusal": null }, "finish_reason": "stop" }],
        }))
        .unwrap();

        assert_eq!(completion.text, "");
        assert_eq!(completion.finish, FinishReason::Stop);
        assert_eq!(completion.refusal, None);
    }

    #[test]
    fn parse_missing_usage_and_model() {
        let completion =
            parse_value(json!({ "choices": [{ "message": { "content": "ok" }, "finish_reason": "stop" }] }))
                .unwrap();

        assert_eq!(
            completion.usage,
            Usage {
                prompt_tokens: 0,
                completion_tokens: 0
            }
        );
        assert_eq!(completion.model, "");
    }

    #[test]
    fn parse_null_usage_members() {
        let completion = parse_value(json!({
            "choices": [{ "message": { "content": "ok" }, "finish_reason": "stop" }],
            "usage": { "prompt_tokens": null, "completion_tokens": 4 },
        }))
        .unwrap();

        assert_eq!(
            completion.usage,
            Usage {
                prompt_tokens: 0,
                completion_tokens: 4
            }
        );
    }

    #[test]
    fn parse_missing_finish_reason() {
        let completion = parse_value(json!({ "choices": [{ "message": { "content": "ok" } }] })).unwrap();

        assert_eq!(completion.finish, FinishReason::Other);
        assert_eq!(completion.finish_raw, "");
    }

    #[test]
    fn parse_keeps_big_integers_in_text() {
        let content = r#"{"policy_number":123456789012345678901234567890,"amount":0.10000000000000000001}"#;
        let completion = parse_value(json!({
            "choices": [{ "message": { "content": content }, "finish_reason": "stop" }],
        }))
        .unwrap();

        assert_eq!(completion.text, content);
    }

    #[test]
    fn parse_rejects_non_json() {
        assert_eq!(
            error_reason(b"<html>Bad Gateway</html>"),
            "the body is not valid JSON: expected value at line 1 column 1"
        );
        assert_eq!(
            error_reason(b""),
            "the body is not valid JSON: EOF while parsing a value at line 1 column 0"
        );
    }

    #[test]
    fn parse_rejects_non_object() {
        assert_eq!(error_reason(b"[1, 2]"), "the body is a JSON array, not an object");
    }

    #[test]
    fn parse_rejects_wrong_member_type() {
        let body = br#"{"choices": [{"message": {"content": 5}, "finish_reason": "stop"}]}"#;

        assert_eq!(
            error_reason(body),
            "the body has an unexpected shape: invalid type: number, expected a string"
        );
    }

    #[test]
    fn parse_rejects_missing_choices() {
        assert_eq!(
            error_reason(br#"{"model": "gpt-4o"}"#),
            "the body has no `choices` array"
        );
    }

    #[test]
    fn parse_rejects_empty_choices() {
        assert_eq!(
            error_reason(br#"{"model": "gpt-4o", "choices": []}"#),
            "the `choices` array is empty"
        );
    }

    #[test]
    fn parse_rejects_choice_without_message() {
        assert_eq!(
            error_reason(br#"{"choices": [{"index": 0, "finish_reason": "stop"}]}"#),
            "`choices[0]` has no `message`"
        );
    }

    #[test]
    fn parse_rejects_error_object() {
        let body = json!({
            "error": {
                "message": "The model `gpt-5-nano` does not exist.",
                "type": "invalid_request_error",
                "param": null,
                "code": "model_not_found",
            },
        });

        let error = parse_value(body).unwrap_err();

        assert_eq!(error.protocol, "OpenAI chat completions");
        assert_eq!(
            error.reason,
            "the body is an error object of type `invalid_request_error`: The model `gpt-5-nano` does not exist."
        );
    }

    #[test]
    fn parse_rejects_string_error() {
        assert_eq!(
            error_reason(br#"{"error": "model 'llama3' not found"}"#),
            "the body is an error object: model 'llama3' not found"
        );
    }

    #[test]
    fn protocol_error_message() {
        let error = parse_response(b"{}").unwrap_err();

        assert_eq!(
            error.to_string(),
            "the provider's response is not a valid OpenAI chat completions response: \
             the body has no `choices` array"
        );
    }
}
