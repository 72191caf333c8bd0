//! The model provider layer: requests to OpenAI-compatible chat completions
//! and to Anthropic's Messages API, structured output, and validation of
//! answers. The Call LLM step, and later steps that use a model, build on it.
//!
//! Protocol modules turn a [`ChatRequest`] into an HTTP body and an HTTP
//! response into a [`Completion`]; `schema` builds JSON Schemas from
//! declared fields and validates answers against them.

pub mod anthropic;
pub mod openai;
pub mod schema;

use serde::Serialize;
use serde_json::Value;

/// The protocol a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// OpenAI chat completions, also spoken by Azure OpenAI, Ollama, vLLM,
    /// llama.cpp servers, LM Studio, Groq and OpenRouter.
    OpenAi,
    /// Anthropic's Messages API.
    Anthropic,
}

/// One request to a model, independent of the protocol.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    pub model: String,
    pub system: Option<String>,
    /// The conversation after the system prompt, in order.
    pub messages: Vec<Message>,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub seed: Option<i64>,
    /// A JSON Schema the answer must follow, with a name for it.
    pub structured: Option<StructuredOutput>,
    /// Images sent with the first user message, for models that read images.
    pub images: Vec<Image>,
}

/// An image sent to a model that reads images.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    /// The media type, such as `image/png`.
    pub media_type: String,
    pub data: Vec<u8>,
}

impl Image {
    /// Encodes the image as base64.
    pub fn base64(&self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(&self.data)
    }
}

#[cfg(test)]
impl ChatRequest {
    /// Builds a request for `model` with one user message, "Hello", and no
    /// options set.
    pub(crate) fn hello(model: &str) -> ChatRequest {
        ChatRequest {
            model: model.to_string(),
            system: None,
            messages: vec![Message {
                role: Role::User,
                content: "Hello".to_string(),
            }],
            max_tokens: None,
            temperature: None,
            top_p: None,
            seed: None,
            structured: None,
            images: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Assistant,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StructuredOutput {
    /// A name of letters, digits, `_` and `-`, such as `claim_type`.
    pub name: String,
    /// A JSON Schema of type `object`.
    pub schema: Value,
}

/// Why a model stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The answer is complete.
    Stop,
    /// The token limit cut the answer.
    Length,
    /// The model refused to answer.
    Refusal,
    /// The provider's content filter stopped the answer.
    ContentFilter,
    /// A reason this layer does not know, kept as the provider wrote it.
    Other,
}

/// A model's answer, independent of the protocol.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Completion {
    /// The answer text. For structured output through Anthropic's tool use,
    /// the tool input written as JSON text.
    pub text: String,
    pub finish: FinishReason,
    /// The provider's own word for why it stopped, such as `stop` or
    /// `end_turn`, for messages.
    pub finish_raw: String,
    /// The refusal message, when the provider gives one.
    pub refusal: Option<String>,
    pub usage: Usage,
    /// The model that answered, as the provider names it.
    pub model: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// A response body that does not follow the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the provider's response is not a valid {protocol} response: {reason}")]
pub struct ProtocolError {
    pub protocol: &'static str,
    pub reason: String,
}

/// Reads a response body as a JSON object into `T`. The body is checked to
/// be an object first, because serde would also accept a JSON array for a
/// struct and read it member by member in order.
pub(crate) fn read_object<T: serde::de::DeserializeOwned>(
    body: &[u8],
    protocol: &'static str,
) -> Result<T, ProtocolError> {
    let error = |reason: String| ProtocolError { protocol, reason };
    let value: Value = serde_json::from_slice(body)
        .map_err(|cause| error(format!("the body is not valid JSON: {cause}")))?;
    let kind = match &value {
        Value::Object(_) => None,
        Value::Null => Some("null"),
        Value::Bool(_) => Some("boolean"),
        Value::Number(_) => Some("number"),
        Value::String(_) => Some("string"),
        Value::Array(_) => Some("array"),
    };
    if let Some(kind) = kind {
        return Err(error(format!("the body is a JSON {kind}, not an object")));
    }
    serde_json::from_value(value).map_err(|cause| error(format!("the body has an unexpected shape: {cause}")))
}
