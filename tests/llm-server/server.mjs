// A small OpenAI-compatible chat completions server around a local GGUF
// model, for flowrun's "Call LLM" tests. It binds 127.0.0.1 only, loads the
// model once, and runs one completion at a time.
//
//   node server.mjs --model PATH [--port PORT] [--threads N] [--ctx-size N]
//                   [--repeat-penalty X]
//
// Unlike OpenAI's API, a mild repeat penalty (1.1 over the last 64 tokens)
// is on by default, because without it this small base model loops. For
// example, it fills a JSON array with the same item until max_tokens runs
// out. Pass --repeat-penalty 1 to turn it off.
//
// Port 0 (the default) picks a free port. Once the model is loaded it prints
// "listening on http://127.0.0.1:PORT" on stdout; everything else goes to
// stderr.

import http from "node:http";
import os from "node:os";
import { randomBytes, randomInt } from "node:crypto";
import { existsSync } from "node:fs";
import { getLlama, LlamaCompletion, LlamaLogLevel } from "node-llama-cpp";

const MODEL_ID = "gemma-3-270m";
const HOST = "127.0.0.1";
const DEFAULT_MAX_TOKENS = 256;
const MAX_BODY_BYTES = 1024 * 1024;
const MAX_STOP_SEQUENCES = 4;
// The prompt is a plain transcript, so a new turn label ends the reply.
const TURN_STOPS = ["\nUser:", "\nSystem:", "\nAssistant:"];
const ROLE_LABELS = { system: "System", developer: "System", user: "User", assistant: "Assistant" };

function usage(message) {
  if (message) process.stderr.write(`error: ${message}\n`);
  process.stderr.write(
    "usage: node server.mjs --model PATH [--port PORT] [--threads N] [--ctx-size N] [--repeat-penalty X]\n",
  );
  process.exit(2);
}

function parseArgs(argv) {
  const opts = { model: null, port: 0, threads: 2, ctxSize: 4096, repeatPenalty: 1.1 };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const eq = arg.indexOf("=");
    const name = eq === -1 ? arg : arg.slice(0, eq);
    const takeValue = () => {
      if (eq !== -1) return arg.slice(eq + 1);
      if (i + 1 >= argv.length) usage(`missing value for ${name}`);
      return argv[++i];
    };
    const takeInt = (min, max) => {
      const raw = takeValue();
      if (!/^\d+$/.test(raw)) usage(`invalid ${name} "${raw}": expected a whole number`);
      const n = Number(raw);
      if (n < min || n > max) usage(`invalid ${name} ${n}: expected ${min} to ${max}`);
      return n;
    };
    switch (name) {
      case "--model":
        opts.model = takeValue();
        break;
      case "--port":
        opts.port = takeInt(0, 65535);
        break;
      case "--threads":
        opts.threads = takeInt(1, Number.MAX_SAFE_INTEGER);
        break;
      case "--ctx-size":
        opts.ctxSize = takeInt(256, 131072);
        break;
      case "--repeat-penalty": {
        const raw = takeValue();
        const n = Number(raw);
        if (raw.trim() === "" || !Number.isFinite(n) || n < 1 || n > 2) {
          usage(`invalid ${name} "${raw}": expected a number from 1 (off) to 2`);
        }
        opts.repeatPenalty = n;
        break;
      }
      case "-h":
      case "--help":
        usage();
        break;
      default:
        usage(`unknown argument "${arg}"`);
    }
  }
  if (!opts.model) usage("--model is required");
  if (!existsSync(opts.model)) usage(`model file not found: ${opts.model}`);
  const cores = os.availableParallelism();
  if (opts.threads > cores) {
    usage(`invalid --threads ${opts.threads}: this machine has ${cores} cores, so pass at most ${cores}`);
  }
  return opts;
}

class ApiError extends Error {
  constructor(status, message, { type = "invalid_request_error", code = null, param = null } = {}) {
    super(message);
    this.status = status;
    this.type = type;
    this.code = code;
    this.param = param;
  }
}

const bad = (message, param = null, code = null) =>
  new ApiError(400, message, { param, code });

function sendJson(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(text),
  });
  res.end(text);
}

function sendError(res, err) {
  sendJson(res, err.status, {
    error: { message: err.message, type: err.type, param: err.param, code: err.code },
  });
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    let failed = false;
    req.on("data", (chunk) => {
      if (failed) return;
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        failed = true;
        reject(new ApiError(413, `request body is larger than ${MAX_BODY_BYTES} bytes`));
        return;
      }
      chunks.push(chunk);
    });
    req.on("end", () => {
      if (!failed) resolve(Buffer.concat(chunks).toString("utf8"));
    });
    req.on("error", reject);
  });
}

const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
const isNumber = (v) => typeof v === "number" && Number.isFinite(v);

function messageText(content, index) {
  if (typeof content === "string") return content;
  // Also take the array form, as long as every part is text.
  if (Array.isArray(content)) {
    return content
      .map((part, j) => {
        if (!isObject(part) || part.type !== "text" || typeof part.text !== "string") {
          throw bad(`messages[${index}].content[${j}] must be a text part`, `messages[${index}].content`);
        }
        return part.text;
      })
      .join("");
  }
  throw bad(`messages[${index}].content must be a string`, `messages[${index}].content`);
}

// Checks an OpenAI Chat Completions request and turns it into the few
// settings the generation needs.
function parseChatRequest(body) {
  if (!isObject(body)) throw bad("the request body must be a JSON object");

  if (typeof body.model !== "string" || body.model === "") {
    throw bad("model is required and must be a string", "model");
  }
  if (body.model !== MODEL_ID) {
    throw new ApiError(404, `The model \`${body.model}\` does not exist; this server has \`${MODEL_ID}\``, {
      param: "model",
      code: "model_not_found",
    });
  }

  if (!Array.isArray(body.messages) || body.messages.length === 0) {
    throw bad("messages must be a non-empty array", "messages");
  }
  const messages = body.messages.map((m, i) => {
    if (!isObject(m)) throw bad(`messages[${i}] must be an object`, "messages");
    if (!Object.hasOwn(ROLE_LABELS, m.role)) {
      throw bad(
        `messages[${i}].role must be one of system, developer, user, assistant; got ${JSON.stringify(m.role)}`,
        `messages[${i}].role`,
      );
    }
    return { role: m.role, text: messageText(m.content, i) };
  });

  if (body.stream === true) throw bad("stream is not supported by this server", "stream");
  if (body.n != null && body.n !== 1) throw bad("only n = 1 is supported", "n");

  let maxTokens = DEFAULT_MAX_TOKENS;
  for (const key of ["max_completion_tokens", "max_tokens"]) {
    const v = body[key];
    if (v == null) continue;
    if (!Number.isInteger(v) || v < 1) throw bad(`${key} must be a positive integer`, key);
    maxTokens = v;
    break;
  }

  let temperature = 1;
  if (body.temperature != null) {
    if (!isNumber(body.temperature) || body.temperature < 0 || body.temperature > 2) {
      throw bad("temperature must be a number from 0 to 2", "temperature");
    }
    temperature = body.temperature;
  }

  let topP = 1;
  if (body.top_p != null) {
    if (!isNumber(body.top_p) || body.top_p < 0 || body.top_p > 1) {
      throw bad("top_p must be a number from 0 to 1", "top_p");
    }
    topP = body.top_p;
  }

  let seed = null;
  if (body.seed != null) {
    if (!Number.isSafeInteger(body.seed)) throw bad("seed must be an integer", "seed");
    // The sampler takes an unsigned 32-bit seed.
    seed = ((body.seed % 2 ** 32) + 2 ** 32) % 2 ** 32;
  }

  const penalties = {};
  for (const [key, name] of [
    ["frequency_penalty", "frequencyPenalty"],
    ["presence_penalty", "presencePenalty"],
  ]) {
    const v = body[key];
    if (v == null) continue;
    if (!isNumber(v) || v < -2 || v > 2) throw bad(`${key} must be a number from -2 to 2`, key);
    if (v !== 0) penalties[name] = v;
  }

  let stop = [];
  if (body.stop != null) {
    const list = typeof body.stop === "string" ? [body.stop] : body.stop;
    if (!Array.isArray(list) || list.some((s) => typeof s !== "string" || s === "")) {
      throw bad("stop must be a non-empty string or an array of non-empty strings", "stop");
    }
    if (list.length > MAX_STOP_SEQUENCES) {
      throw bad(`stop takes at most ${MAX_STOP_SEQUENCES} sequences`, "stop");
    }
    stop = list;
  }

  let format = { type: "text" };
  const rf = body.response_format;
  if (rf != null) {
    if (!isObject(rf) || typeof rf.type !== "string") {
      throw bad("response_format must be an object with a type", "response_format");
    }
    if (rf.type === "json_schema") {
      const js = rf.json_schema;
      if (!isObject(js)) throw bad("response_format.json_schema must be an object", "response_format.json_schema");
      if (typeof js.name !== "string" || !/^[A-Za-z0-9_-]{1,64}$/.test(js.name)) {
        throw bad(
          "response_format.json_schema.name must be 1 to 64 letters, digits, underscores or dashes",
          "response_format.json_schema.name",
        );
      }
      if (!isObject(js.schema)) {
        throw bad("response_format.json_schema.schema must be a JSON Schema object", "response_format.json_schema.schema");
      }
      if (js.strict != null && typeof js.strict !== "boolean") {
        throw bad("response_format.json_schema.strict must be a boolean", "response_format.json_schema.strict");
      }
      format = { type: "json_schema", schema: prepareSchema(js.schema, "schema") };
    } else if (rf.type === "json_object" || rf.type === "text") {
      format = { type: rf.type };
    } else {
      throw bad(
        `response_format.type must be text, json_object or json_schema; got ${JSON.stringify(rf.type)}`,
        "response_format.type",
      );
    }
  }

  return { messages, maxTokens, temperature, topP, seed, penalties, stop, format };
}

// The JSON Schema keywords that node-llama-cpp's grammar enforces. The grammar
// reads any other schema as "null only" or as no constraint, so the server
// rejects such schemas instead of producing output that does not match.
const SCHEMA_ANNOTATIONS = new Set([
  "title", "description", "$schema", "$id", "$comment", "default", "examples",
  "deprecated", "readOnly", "writeOnly",
]);
const SCHEMA_KEYWORDS = new Set([
  "type", "enum", "const", "oneOf", "anyOf", "$ref", "$defs",
  "properties", "required", "additionalProperties", "minProperties", "maxProperties",
  "items", "prefixItems", "minItems", "maxItems",
  "minLength", "maxLength", "format",
]);
const SCALAR_TYPES = new Set(["string", "number", "integer", "boolean", "null"]);
const STRING_FORMATS = new Set(["date-time", "date", "time"]);

// Checks a JSON Schema against what the grammar supports and returns a copy
// in the grammar's dialect. anyOf becomes oneOf, which generates the same
// output because the output only has to match one branch.
function prepareSchema(schema, path) {
  const fail = (message) => bad(`${path}: ${message}`, "response_format.json_schema.schema");
  if (!isObject(schema)) throw fail("a schema must be an object");
  const out = {};
  for (const [key, value] of Object.entries(schema)) {
    if (SCHEMA_ANNOTATIONS.has(key)) {
      if (key === "description") out[key] = value;
      continue;
    }
    if (!SCHEMA_KEYWORDS.has(key)) throw fail(`the keyword "${key}" is not supported by this server`);
    out[key] = value;
  }
  if (!["type", "enum", "const", "oneOf", "anyOf", "$ref"].some((k) => k in out)) {
    throw fail("each schema needs a type, enum, const, anyOf, oneOf or $ref");
  }
  if (["oneOf", "anyOf", "$ref"].filter((k) => k in out).length > 1) {
    throw fail("use only one of anyOf, oneOf and $ref in one schema");
  }
  const sub = (value, suffix) => prepareSchema(value, `${path}${suffix}`);

  if ("$defs" in out) {
    if (!isObject(out.$defs)) throw fail("$defs must be an object");
    out.$defs = Object.fromEntries(
      Object.entries(out.$defs).map(([name, def]) => [name, sub(def, `.$defs.${name}`)]),
    );
  }
  if ("$ref" in out && (typeof out.$ref !== "string" || !out.$ref.startsWith("#/$defs/"))) {
    throw fail('$ref must point into "#/$defs/"');
  }
  if ("enum" in out && (!Array.isArray(out.enum) || out.enum.length === 0 ||
      out.enum.some((v) => v !== null && typeof v === "object"))) {
    throw fail("enum must be a non-empty array of strings, numbers, booleans or null");
  }
  if ("const" in out && out.const !== null && typeof out.const === "object") {
    throw fail("const must be a string, number, boolean or null");
  }
  for (const key of ["anyOf", "oneOf"]) {
    if (!(key in out)) continue;
    if (!Array.isArray(out[key]) || out[key].length === 0) throw fail(`${key} must be a non-empty array`);
    out.oneOf = out[key].map((s, i) => sub(s, `.${key}[${i}]`));
    if (key === "anyOf") delete out.anyOf;
  }

  const type = out.type;
  const isType = (t) => type === t;
  if ("type" in out) {
    const types = Array.isArray(type) ? type : [type];
    const known = types.every((t) => SCALAR_TYPES.has(t) || t === "object" || t === "array");
    if (!known || types.length === 0) throw fail(`unknown type ${JSON.stringify(type)}`);
    if (Array.isArray(type) && types.some((t) => !SCALAR_TYPES.has(t))) {
      throw fail('a list of types may only hold string, number, integer, boolean and null; use anyOf for objects and arrays');
    }
  }
  const onlyFor = (keys, expected) => {
    for (const k of keys) {
      if (k in out && !isType(expected)) throw fail(`${k} is only supported with type "${expected}"`);
    }
  };
  onlyFor(["properties", "required", "additionalProperties", "minProperties", "maxProperties"], "object");
  onlyFor(["items", "prefixItems", "minItems", "maxItems"], "array");
  onlyFor(["minLength", "maxLength", "format"], "string");

  if (isType("object")) {
    if ("properties" in out) {
      if (!isObject(out.properties)) throw fail("properties must be an object");
      out.properties = Object.fromEntries(
        Object.entries(out.properties).map(([name, s]) => [name, sub(s, `.properties.${name}`)]),
      );
    }
    if ("required" in out) {
      if (!Array.isArray(out.required) || out.required.some((k) => typeof k !== "string")) {
        throw fail("required must be an array of strings");
      }
      const missing = out.required.filter((k) => !Object.hasOwn(out.properties ?? {}, k));
      if (missing.length > 0) throw fail(`required names unknown properties: ${missing.join(", ")}`);
      // NOTE: the grammar always writes every property, even one left out of
      // "required". That output is still valid, and the key itself is dropped.
      delete out.required;
    }
    if (isObject(out.additionalProperties)) {
      out.additionalProperties = sub(out.additionalProperties, ".additionalProperties");
    } else if ("additionalProperties" in out && typeof out.additionalProperties !== "boolean") {
      throw fail("additionalProperties must be a boolean or a schema");
    }
  }
  if (isType("array")) {
    if ("items" in out) out.items = sub(out.items, ".items");
    if ("prefixItems" in out) {
      if (!Array.isArray(out.prefixItems)) throw fail("prefixItems must be an array");
      out.prefixItems = out.prefixItems.map((s, i) => sub(s, `.prefixItems[${i}]`));
    }
  }
  if ("format" in out && !STRING_FORMATS.has(out.format)) {
    throw fail(`the string format ${JSON.stringify(out.format)} is not supported; use date-time, date or time`);
  }
  for (const k of ["minProperties", "maxProperties", "minItems", "maxItems", "minLength", "maxLength"]) {
    if (k in out && (!Number.isInteger(out[k]) || out[k] < 0)) throw fail(`${k} must be a non-negative integer`);
  }
  return out;
}

// A base model has no chat template: the conversation becomes a plain
// transcript that ends where the assistant's reply should start.
function buildPrompt(messages) {
  const lines = messages.map((m) => `${ROLE_LABELS[m.role]}: ${m.text}`);
  lines.push("Assistant:");
  return lines.join("\n");
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));

  const llama = await getLlama({
    gpu: false,
    // Load the prebuilt binary from @node-llama-cpp/linux-x64. Without these
    // options a missing binary would make node-llama-cpp download and build
    // llama.cpp.
    build: "never",
    skipDownload: true,
    usePrebuiltBinaries: true,
    progressLogs: false,
    maxThreads: opts.threads,
    logLevel: LlamaLogLevel.error,
    logger: (level, message) => process.stderr.write(`llama.cpp ${level}: ${message}\n`),
  });
  const model = await llama.loadModel({ modelPath: opts.model });
  const context = await model.createContext({
    contextSize: opts.ctxSize,
    sequences: 1,
    threads: { ideal: opts.threads, min: opts.threads },
  });
  const completion = new LlamaCompletion({ contextSequence: context.getSequence() });
  const bosCount = model.tokens.bos != null ? 1 : 0;
  const jsonGrammar = await llama.getGrammarFor("json");

  process.stderr.write(
    `model ${opts.model} loaded: ${model.trainContextSize} train context, ` +
      `${context.contextSize} context, ${context.idealThreads} threads (cpu math cores ${llama.cpuMathCores})\n`,
  );

  // Building a grammar takes time, so the 32 most recently used are kept.
  const grammars = new Map();
  async function schemaGrammar(schema) {
    const key = JSON.stringify(schema);
    let grammar = grammars.get(key);
    if (!grammar) {
      try {
        grammar = await llama.createGrammarForJsonSchema(schema);
      } catch (err) {
        throw bad(
          `response_format.json_schema.schema is not supported: ${err.message}`,
          "response_format.json_schema.schema",
        );
      }
      if (grammars.size >= 32) grammars.delete(grammars.keys().next().value);
    }
    grammars.delete(key);
    grammars.set(key, grammar);
    return grammar;
  }

  // One generation at a time: each request waits for the previous one.
  let queue = Promise.resolve();
  const enqueue = (job) => {
    const run = queue.then(job, job);
    queue = run.catch(() => {});
    return run;
  };

  async function complete(request) {
    const prompt = buildPrompt(request.messages);
    const promptTokens = model.tokenize(prompt, false, "trimLeadingSpace").length + bosCount;
    const room = context.contextSize - promptTokens;
    if (room < 1) {
      throw bad(
        `the prompt is ${promptTokens} tokens, which leaves no room in the ${context.contextSize}-token context`,
        "messages",
        "context_length_exceeded",
      );
    }

    // NOTE: with a grammar, a token took 25 to 125 ms on two busy cores in our
    // runs, and the most inside free-text strings. Without one it took about
    // 25 ms. The likely cause is that each step checks the 262,144-token
    // vocabulary against the grammar.
    let grammar;
    if (request.format.type === "json_schema") {
      grammar = await schemaGrammar(request.format.schema);
    } else if (request.format.type === "json_object") {
      grammar = jsonGrammar;
    }

    let completionTokens = 0;
    const { response, metadata } = await completion.generateCompletionWithMeta(prompt, {
      maxTokens: Math.min(request.maxTokens, room),
      temperature: request.temperature,
      topP: request.topP,
      topK: 0,
      seed: request.seed ?? randomInt(2 ** 31),
      repeatPenalty: { penalty: opts.repeatPenalty, lastTokens: 64, ...request.penalties },
      grammar,
      customStopTriggers: [...TURN_STOPS, ...request.stop],
      disableContextShift: true,
      onToken: (tokens) => {
        completionTokens += tokens.length;
      },
    });

    const content = grammar ? response.trim() : response.trimStart();
    return {
      id: `chatcmpl-${randomBytes(12).toString("hex")}`,
      object: "chat.completion",
      created: Math.floor(Date.now() / 1000),
      model: MODEL_ID,
      choices: [
        {
          index: 0,
          message: { role: "assistant", content, refusal: null },
          logprobs: null,
          finish_reason: metadata.stopReason === "maxTokens" ? "length" : "stop",
        },
      ],
      usage: {
        prompt_tokens: promptTokens,
        completion_tokens: completionTokens,
        total_tokens: promptTokens + completionTokens,
      },
    };
  }

  async function route(req, res) {
    const path = new URL(req.url, `http://${HOST}`).pathname.replace(/\/+$/, "") || "/";
    const allow = (method) => {
      if (req.method !== method) {
        res.setHeader("allow", method);
        throw new ApiError(405, `${req.method} is not allowed on ${path}; use ${method}`);
      }
    };
    if (path === "/health") {
      allow("GET");
      return sendJson(res, 200, { status: "ok" });
    }
    if (path === "/v1/models") {
      allow("GET");
      return sendJson(res, 200, {
        object: "list",
        data: [{ id: MODEL_ID, object: "model", created: 0, owned_by: "local" }],
      });
    }
    if (path === `/v1/models/${MODEL_ID}`) {
      allow("GET");
      return sendJson(res, 200, { id: MODEL_ID, object: "model", created: 0, owned_by: "local" });
    }
    if (path === "/v1/chat/completions") {
      allow("POST");
      const raw = await readBody(req);
      let body;
      try {
        body = JSON.parse(raw);
      } catch (err) {
        throw bad(`the request body is not valid JSON: ${err.message}`);
      }
      const request = parseChatRequest(body);
      const result = await enqueue(() => complete(request));
      return sendJson(res, 200, result);
    }
    throw new ApiError(404, `no route for ${req.method} ${path}`, { code: "not_found" });
  }

  // Logs one line for each request, with the error message when it failed.
  const server = http.createServer(async (req, res) => {
    const started = Date.now();
    let failure = "";
    try {
      await route(req, res);
    } catch (err) {
      if (err instanceof ApiError) {
        sendError(res, err);
        failure = `: ${err.message}`;
      } else {
        process.stderr.write(`internal error: ${err?.stack ?? err}\n`);
        sendError(res, new ApiError(500, `internal error: ${err?.message ?? err}`, { type: "server_error" }));
        failure = ": internal error";
      }
    } finally {
      process.stderr.write(`${req.method} ${req.url} ${res.statusCode} ${Date.now() - started}ms${failure}\n`);
    }
  });

  const shutdown = async (signal) => {
    process.stderr.write(`${signal}: shutting down\n`);
    server.close();
    server.closeAllConnections();
    await llama.dispose().catch(() => {});
    process.exit(0);
  };
  process.on("SIGTERM", () => shutdown("SIGTERM"));
  process.on("SIGINT", () => shutdown("SIGINT"));

  server.listen(opts.port, HOST, () => {
    process.stdout.write(`listening on http://${HOST}:${server.address().port}\n`);
  });
  server.on("error", (err) => {
    process.stderr.write(`failed to listen on ${HOST}:${opts.port}: ${err.message}\n`);
    process.exit(1);
  });
}

main().catch((err) => {
  process.stderr.write(`failed to start: ${err?.stack ?? err}\n`);
  process.exit(1);
});
