//! Anthropic's Messages API (`POST /v1/messages`, anthropic-version
//! 2023-06-01).
//!
//! This module only builds request bodies and reads response bodies. The
//! caller sends the request and checks the HTTP status.

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{ChatRequest, Completion, FinishReason, ProtocolError, Role, Usage};

/// Anthropic's base URL, without the `/v1` version path.
pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";

/// The `max_tokens` sent when the request sets none, because the Messages API
/// requires the member on every request.
pub const DEFAULT_MAX_TOKENS: u32 = 1024;

/// The `anthropic-version` header value. Request and response shapes in this
/// module follow this version.
const API_VERSION: &str = "2023-06-01";

/// The protocol name in [`ProtocolError`] messages.
const PROTOCOL: &str = "Anthropic Messages API";

/// The description of the tool that carries structured output. The model
/// reads it when it decides what to put in the tool input.
const STRUCTURED_TOOL_DESCRIPTION: &str =
    "Submit the final answer. The input is the complete answer and must follow the input schema.";

/// Builds the Messages URL from a base URL such as `https://api.anthropic.com`.
///
/// A base URL that already ends in `/v1`, as OpenAI-style configurations
/// write it, gets no second `/v1`.
pub fn endpoint(base_url: &str) -> String {
    let (base, query) = match base_url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (base_url, None),
    };
    let base = base.trim_end_matches('/');
    let base = base.strip_suffix("/v1").unwrap_or(base);
    match query {
        Some(query) => format!("{base}/v1/messages?{query}"),
        None => format!("{base}/v1/messages"),
    }
}

/// Builds the request headers other than `Content-Type`.
///
/// An absent or empty key sends no `x-api-key`, for proxies that add the key
/// themselves. The API itself rejects requests without one.
pub fn headers(api_key: Option<&str>) -> Vec<(String, String)> {
    let mut headers = Vec::with_capacity(2);
    if let Some(key) = api_key.filter(|key| !key.is_empty()) {
        headers.push(("x-api-key".to_string(), key.to_string()));
    }
    headers.push(("anthropic-version".to_string(), API_VERSION.to_string()));
    headers
}

/// Builds the JSON request body. Optional settings the request leaves unset
/// are left out of the body, except `max_tokens`, which falls back to
/// [`DEFAULT_MAX_TOKENS`].
///
/// The Messages API has no `seed`, so [`ChatRequest::seed`] is ignored and
/// cannot make responses reproducible.
///
/// The Messages API has no JSON schema response format in anthropic-version
/// 2023-06-01, so structured output is one tool whose `input_schema` is the
/// schema, forced with `tool_choice`. The answer then arrives as that tool's
/// input, which [`parse_response`] returns as JSON text.
pub fn request_body(request: &ChatRequest) -> Value {
    let first_user = request
        .messages
        .iter()
        .position(|message| message.role == crate::llm::Role::User);
    let messages: Vec<Value> = request
        .messages
        .iter()
        .enumerate()
        .map(|(index, message)| {
            if Some(index) == first_user && !request.images.is_empty() {
                let mut blocks: Vec<Value> = request
                    .images
                    .iter()
                    .map(|image| {
                        json!({
                            "type": "image",
                            "source": { "type": "base64", "media_type": image.media_type, "data": image.base64() }
                        })
                    })
                    .collect();
                blocks.push(json!({ "type": "text", "text": message.content }));
                json!({ "role": role_name(message.role), "content": blocks })
            } else {
                json!({ "role": role_name(message.role), "content": message.content })
            }
        })
        .collect();

    let mut body = Map::new();
    body.insert("model".to_string(), json!(request.model));
    body.insert(
        "max_tokens".to_string(),
        json!(request.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS)),
    );
    if let Some(system) = &request.system {
        body.insert("system".to_string(), json!(system));
    }
    body.insert("messages".to_string(), Value::Array(messages));

    // NOTE: Claude Sonnet 4.5 and Opus 4.1 and later reject a request that
    // sets both `temperature` and `top_p` with a 400 error.
    if let Some(temperature) = request.temperature {
        body.insert("temperature".to_string(), json!(temperature));
    }
    if let Some(top_p) = request.top_p {
        body.insert("top_p".to_string(), json!(top_p));
    }

    if let Some(structured) = &request.structured {
        let tool = json!({
            "name": structured.name,
            "description": STRUCTURED_TOOL_DESCRIPTION,
            "input_schema": structured.schema,
        });
        body.insert("tools".to_string(), Value::Array(vec![tool]));
        body.insert(
            "tool_choice".to_string(),
            json!({ "type": "tool", "name": structured.name }),
        );
    }

    Value::Object(body)
}

/// Parses the body of a 2xx response into a [`Completion`].
///
/// The text is the concatenation of all `text` blocks. When the content has a
/// `tool_use` block, the text is instead the first such block's `input`
/// written as compact JSON, with numbers kept digit for digit and members in
/// their received order. Blocks of other types, such as `thinking`, are
/// skipped.
///
/// # Errors
///
/// Returns a [`ProtocolError`] when the body is not JSON, has an unexpected
/// shape, is an error object, has no `content`, or has a block without its
/// `text` or `input`.
pub fn parse_response(body: &[u8]) -> Result<Completion, ProtocolError> {
    let response: ResponseBody = super::read_object(body, PROTOCOL)?;

    // The Messages API sends errors with a 4xx or 5xx status. This check keeps
    // an error object that a proxy sends with a 2xx status from being
    // reported as a missing `content` array.
    if response.kind.as_deref() == Some("error") || response.error.is_some() {
        let reason = match &response.error {
            Some(error) => describe_error_object(error),
            None => "the body has `type` \"error\" but no `error` object".to_string(),
        };
        return Err(protocol_error(reason));
    }

    let content = response
        .content
        .ok_or_else(|| protocol_error("the body has no `content` array".to_string()))?;
    let text = content_text(&content)?;

    let finish_raw = response.stop_reason.unwrap_or_default();
    let finish = finish_reason(&finish_raw);
    // Anthropic has no separate refusal member, so the text the model wrote
    // before it stopped is the refusal message, when there is any.
    let refusal = (finish == FinishReason::Refusal && !text.is_empty()).then(|| text.clone());

    let usage = response.usage.unwrap_or_default();
    // The Messages API counts tokens read from and written to the prompt
    // cache apart from `input_tokens`. Their sum is the whole prompt, as
    // OpenAI's `prompt_tokens` counts it.
    let prompt_tokens = usage.input_tokens.unwrap_or(0)
        + usage.cache_creation_input_tokens.unwrap_or(0)
        + usage.cache_read_input_tokens.unwrap_or(0);

    Ok(Completion {
        text,
        finish,
        finish_raw,
        refusal,
        usage: Usage {
            prompt_tokens,
            completion_tokens: usage.output_tokens.unwrap_or(0),
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

/// Builds the completion text from the content blocks.
fn content_text(content: &[ContentBlock]) -> Result<String, ProtocolError> {
    // With a forced `tool_choice` the model writes no text before the tool
    // call, and the tool input is the structured output.
    if let Some(block) = content.iter().find(|block| block.kind == "tool_use") {
        let input = block
            .input
            .as_ref()
            .ok_or_else(|| protocol_error("a `tool_use` block has no `input`".to_string()))?;
        return Ok(input.to_string());
    }

    let mut text = String::new();
    for block in content.iter().filter(|block| block.kind == "text") {
        let block_text = block
            .text
            .as_deref()
            .ok_or_else(|| protocol_error("a `text` block has no `text`".to_string()))?;
        text.push_str(block_text);
    }
    Ok(text)
}

/// Maps the Messages API `stop_reason`. A `tool_use` stop is a complete
/// response, because this module only offers a tool for structured output.
/// Values such as `pause_turn`, which only server tools produce, map to
/// [`FinishReason::Other`] with the raw value kept for messages.
fn finish_reason(raw: &str) -> FinishReason {
    match raw {
        "end_turn" | "stop_sequence" | "tool_use" => FinishReason::Stop,
        "max_tokens" => FinishReason::Length,
        "refusal" => FinishReason::Refusal,
        _ => FinishReason::Other,
    }
}

fn protocol_error(reason: String) -> ProtocolError {
    ProtocolError {
        protocol: PROTOCOL,
        reason,
    }
}

/// Describes an `error` member, which the Messages API writes as an object
/// with `type` (such as `overloaded_error`) and `message`.
fn describe_error_object(error: &Value) -> String {
    let kind = error.get("type").and_then(Value::as_str);
    let message = error.get("message").and_then(Value::as_str);
    match (kind, message) {
        (Some(kind), Some(message)) => format!("the body is an error object of type `{kind}`: {message}"),
        (None, Some(message)) => format!("the body is an error object: {message}"),
        _ => format!("the body is an error object: {error}"),
    }
}

/// The members of a Messages API response that this module reads. Every
/// member is optional here so that a missing one gets a precise error or a
/// default rather than a generic deserialization error.
#[derive(Deserialize)]
struct ResponseBody {
    /// `message` for a completion, `error` for an error object.
    #[serde(rename = "type")]
    kind: Option<String>,
    content: Option<Vec<ContentBlock>>,
    stop_reason: Option<String>,
    usage: Option<ResponseUsage>,
    model: Option<String>,
    error: Option<Value>,
}

/// One content block of any type. A struct rather than an enum tagged by
/// `type`, so that block types this module skips need no variant.
#[derive(Deserialize)]
struct ContentBlock {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
    input: Option<Value>,
}

#[derive(Deserialize, Default)]
struct ResponseUsage {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::{Message, StructuredOutput};

    #[test]
    fn images_precede_the_text_as_base64_blocks() {
        let mut request = ChatRequest::hello("claude");
        request.images = vec![crate::llm::Image {
            media_type: "image/png".to_string(),
            data: b"PNG".to_vec(),
        }];
        let body = request_body(&request);
        assert_eq!(
            body["messages"][0]["content"],
            json!([
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "UE5H"}},
                {"type": "text", "text": "Hello"}
            ])
        );
    }

    fn minimal_request() -> ChatRequest {
        ChatRequest::hello("claude-sonnet-4-5")
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
            endpoint("https://api.anthropic.com"),
            "https://api.anthropic.com/v1/messages"
        );
        assert_eq!(
            endpoint("http://127.0.0.1:8080"),
            "http://127.0.0.1:8080/v1/messages"
        );
    }

    #[test]
    fn endpoint_tolerates_trailing_slash() {
        assert_eq!(
            endpoint("https://api.anthropic.com/"),
            "https://api.anthropic.com/v1/messages"
        );
        assert_eq!(
            endpoint("https://api.anthropic.com//"),
            "https://api.anthropic.com/v1/messages"
        );
    }

    #[test]
    fn endpoint_tolerates_version_path() {
        assert_eq!(
            endpoint("https://api.anthropic.com/v1"),
            "https://api.anthropic.com/v1/messages"
        );
        assert_eq!(
            endpoint("https://api.anthropic.com/v1/"),
            "https://api.anthropic.com/v1/messages"
        );
        assert_eq!(
            endpoint("https://proxy.example/anthropic/v1"),
            "https://proxy.example/anthropic/v1/messages"
        );
    }

    #[test]
    fn endpoint_of_default_base_url() {
        assert_eq!(
            endpoint(DEFAULT_BASE_URL),
            "https://api.anthropic.com/v1/messages"
        );
    }

    #[test]
    fn headers_with_key() {
        assert_eq!(
            headers(Some("sk-ant-test")),
            vec![
                ("x-api-key".to_string(), "sk-ant-test".to_string()),
                ("anthropic-version".to_string(), "2023-06-01".to_string()),
            ]
        );
    }

    #[test]
    fn headers_without_key() {
        let expected = vec![("anthropic-version".to_string(), "2023-06-01".to_string())];

        assert_eq!(headers(None), expected);
        assert_eq!(headers(Some("")), expected);
    }

    #[test]
    fn request_body_full() {
        let request = ChatRequest {
            model: "claude-sonnet-4-5".to_string(),
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

        let body = request_body(&request);

        assert_eq!(
            body,
            json!({
                "model": "claude-sonnet-4-5",
                "max_tokens": 256,
                "system": "You classify claims.",
                "messages": [
                    { "role": "user", "content": "Claim 1" },
                    { "role": "assistant", "content": "auto" },
                    { "role": "user", "content": "Claim 2" },
                ],
                "temperature": 0.2,
                "top_p": 0.9,
            })
        );
        assert!(
            body.get("seed").is_none(),
            "the Messages API has no `seed`: {body}"
        );
    }

    #[test]
    fn request_body_minimal() {
        let body = request_body(&minimal_request());

        assert_eq!(
            body,
            json!({
                "model": "claude-sonnet-4-5",
                "max_tokens": 1024,
                "messages": [{ "role": "user", "content": "Hello" }],
            })
        );
        for absent in ["system", "temperature", "top_p", "seed", "tools", "tool_choice"] {
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
                "model": "claude-sonnet-4-5",
                "max_tokens": 1024,
                "messages": [{ "role": "user", "content": "Hello" }],
                "tools": [{
                    "name": "claim_type",
                    "description": STRUCTURED_TOOL_DESCRIPTION,
                    "input_schema": schema,
                }],
                "tool_choice": { "type": "tool", "name": "claim_type" },
            })
        );
    }

    #[test]
    fn parse_normal_text() {
        let completion = parse_value(json!({
            "id": "msg_01",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5-20250929",
            "content": [
                { "type": "text", "text": "Hello" },
                { "type": "text", "text": " there" },
            ],
            "stop_reason": "end_turn",
            "stop_sequence": null,
            "usage": { "input_tokens": 12, "output_tokens": 3 },
        }))
        .unwrap();

        assert_eq!(
            completion,
            Completion {
                text: "Hello there".to_string(),
                finish: FinishReason::Stop,
                finish_raw: "end_turn".to_string(),
                refusal: None,
                usage: Usage {
                    prompt_tokens: 12,
                    completion_tokens: 3
                },
                model: "claude-sonnet-4-5-20250929".to_string(),
            }
        );
    }

    #[test]
    fn parse_stop_sequence() {
        let completion = parse_value(json!({
            "type": "message",
            "content": [{ "type": "text", "text": "Hello" }],
            "stop_reason": "stop_sequence",
            "stop_sequence": "END",
        }))
        .unwrap();

        assert_eq!(completion.finish, FinishReason::Stop);
        assert_eq!(completion.finish_raw, "stop_sequence");
    }

    #[test]
    fn parse_length() {
        let completion = parse_value(json!({
            "type": "message",
            "model": "claude-sonnet-4-5",
            "content": [{ "type": "text", "text": "Hello th" }],
            "stop_reason": "max_tokens",
            "usage": { "input_tokens": 12, "output_tokens": 2 },
        }))
        .unwrap();

        assert_eq!(completion.text, "Hello th");
        assert_eq!(completion.finish, FinishReason::Length);
        assert_eq!(completion.finish_raw, "max_tokens");
    }

    #[test]
    fn parse_refusal() {
        let completion = parse_value(json!({
            "type": "message",
            "model": "claude-sonnet-4-5",
            "content": [{ "type": "text", "text": "I can't help with that." }],
            "stop_reason": "refusal",
            "usage": { "input_tokens": 20, "output_tokens": 7 },
        }))
        .unwrap();

        assert_eq!(completion.finish, FinishReason::Refusal);
        assert_eq!(completion.finish_raw, "refusal");
        assert_eq!(completion.refusal.as_deref(), Some("I can't help with that."));
        assert_eq!(completion.text, "I can't help with that.");
    }

    #[test]
    fn parse_refusal_without_text() {
        let completion =
            parse_value(json!({ "type": "message", "content": [], "stop_reason": "refusal" })).unwrap();

        assert_eq!(completion.finish, FinishReason::Refusal);
        assert_eq!(completion.refusal, None);
        assert_eq!(completion.text, "");
    }

    #[test]
    fn parse_unknown_stop_reason() {
        let completion = parse_value(json!({
            "type": "message",
            "content": [{ "type": "text", "text": "Searching" }],
            "stop_reason": "pause_turn",
        }))
        .unwrap();

        assert_eq!(completion.finish, FinishReason::Other);
        assert_eq!(completion.finish_raw, "pause_turn");
    }

    #[test]
    fn parse_tool_use_input() {
        let completion = parse_value(json!({
            "type": "message",
            "model": "claude-sonnet-4-5",
            "content": [{
                "type": "tool_use",
                "id": "toolu_01",
                "name": "claim_type",
                "input": { "claim_type": "auto", "confidence": 0.9 },
            }],
            "stop_reason": "tool_use",
            "usage": { "input_tokens": 50, "output_tokens": 20 },
        }))
        .unwrap();

        assert_eq!(completion.text, r#"{"claim_type":"auto","confidence":0.9}"#);
        assert_eq!(completion.finish, FinishReason::Stop);
        assert_eq!(completion.finish_raw, "tool_use");
        assert_eq!(
            completion.usage,
            Usage {
                prompt_tokens: 50,
                completion_tokens: 20
            }
        );
    }

    #[test]
    fn parse_tool_use_over_text() {
        let completion = parse_value(json!({
            "type": "message",
            "content": [
                { "type": "thinking", "thinking": "The car hit a fence.", "signature": "abc" },
                { "type": "text", "text": "Here is the answer." },
                { "type": "tool_use", "id": "toolu_01", "name": "claim_type", "input": { "claim_type": "auto" } },
            ],
            "stop_reason": "tool_use",
        }))
        .unwrap();

        assert_eq!(completion.text, r#"{"claim_type":"auto"}"#);
    }

    #[test]
    fn parse_skips_unknown_blocks() {
        let completion = parse_value(json!({
            "type": "message",
            "content": [
                { "type": "thinking", "thinking": "Short answer.", "signature": "abc" },
                { "type": "text", "text": "Hello" },
            ],
            "stop_reason": "end_turn",
        }))
        .unwrap();

        assert_eq!(completion.text, "Hello");
    }

    #[test]
    fn parse_keeps_big_integers_in_tool_input() {
        let body = br#"{
            "type": "message",
            "content": [{
                "type": "tool_use",
                "id": "toolu_01",
                "name": "claim",
                "input": {"policy_number": 123456789012345678901234567890, "amount": 0.10000000000000000001, "count": 18446744073709551617}
            }],
            "stop_reason": "tool_use"
        }"#;

        let completion = parse_response(body).unwrap();

        assert_eq!(
            completion.text,
            r#"{"policy_number":123456789012345678901234567890,"amount":0.10000000000000000001,"count":18446744073709551617}"#
        );
    }

    #[test]
    fn parse_missing_usage_and_model() {
        let completion = parse_value(json!({
            "type": "message",
            "content": [{ "type": "text", "text": "ok" }],
            "stop_reason": "end_turn",
        }))
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
    fn parse_counts_cached_prompt_tokens() {
        let completion = parse_value(json!({
            "type": "message",
            "content": [{ "type": "text", "text": "ok" }],
            "stop_reason": "end_turn",
            "usage": {
                "input_tokens": 10,
                "cache_creation_input_tokens": 200,
                "cache_read_input_tokens": 3000,
                "output_tokens": 5,
            },
        }))
        .unwrap();

        assert_eq!(
            completion.usage,
            Usage {
                prompt_tokens: 3210,
                completion_tokens: 5
            }
        );
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
        assert_eq!(
            error_reason(br#""hello""#),
            "the body is a JSON string, not an object"
        );
    }

    #[test]
    fn parse_rejects_missing_content() {
        assert_eq!(
            error_reason(br#"{"type": "message", "stop_reason": "end_turn"}"#),
            "the body has no `content` array"
        );
    }

    #[test]
    fn parse_rejects_text_block_without_text() {
        assert_eq!(
            error_reason(br#"{"type": "message", "content": [{"type": "text"}], "stop_reason": "end_turn"}"#),
            "a `text` block has no `text`"
        );
    }

    #[test]
    fn parse_rejects_tool_use_without_input() {
        let body = br#"{"type": "message", "content": [{"type": "tool_use", "name": "x"}], "stop_reason": "tool_use"}"#;

        assert_eq!(error_reason(body), "a `tool_use` block has no `input`");
    }

    #[test]
    fn parse_rejects_error_object() {
        let body = json!({
            "type": "error",
            "error": { "type": "overloaded_error", "message": "Overloaded" },
            "request_id": "req_01",
        });

        let error = parse_value(body).unwrap_err();

        assert_eq!(error.protocol, "Anthropic Messages API");
        assert_eq!(
            error.reason,
            "the body is an error object of type `overloaded_error`: Overloaded"
        );
    }

    #[test]
    fn parse_rejects_error_type_without_details() {
        assert_eq!(
            error_reason(br#"{"type": "error"}"#),
            "the body has `type` \"error\" but no `error` object"
        );
    }

    #[test]
    fn protocol_error_message() {
        let error = parse_response(b"{}").unwrap_err();

        assert_eq!(
            error.to_string(),
            "the provider's response is not a valid Anthropic Messages API response: \
             the body has no `content` array"
        );
    }
}
