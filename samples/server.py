#!/usr/bin/env python3
"""A stand-in for the systems that the sample workflows call.

Serves, on 127.0.0.1 only:

  POST /claims-api/claims/<claim number>        files a claim (bearer token required)
  PUT  /claims-api/policies/<policy id>/status  takes an XML policy status (bearer token required)
  GET  /auth-api/auth?member=...&code=...       returns a prior authorization decision
  POST /los/applications                        opens a loan application
  GET  /bureau/score?consent=...                returns a credit score
  POST /v1/chat/completions                     returns a model reply (OpenAI chat completions)
  POST /v1/audio/transcriptions                 returns the transcript of a sample recording

The chat completions route replaces a language model. It picks its reply by
keyword rules on the prompt, so the same request always gets the same reply,
in the shape that the request's response_format sets. An extraction request
(the schema named "extraction") gets, for each field, the text after the
document line labelled with the field's name, as in "Annual premium: $1,842.00"
for `annual_premium`. The transcriptions route answers with the transcript
stored beside the recording in samples/files/, under the uploaded file's
name with `.txt`. The samples' `llm`, `extract` and `transcribe` steps thus
run without a model.

Every request is printed to standard error with its answer. The value of an
Authorization header is masked, so the token given to flowrun stays out of
the log. State lives in memory and is lost when the server stops.

Usage: python3 samples/server.py [--port 8080]
"""

import argparse
import email.parser
import email.policy
import itertools
import os
import json
import re
import sys
import threading
import time
import traceback
import uuid
import xml.etree.ElementTree as ElementTree
from datetime import date, datetime, timedelta, timezone
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

# The largest request body the server reads.
MAX_BODY_BYTES = 1024 * 1024

# How long a prior authorization stays valid after the service date.
AUTHORIZATION_DAYS = 90

print_lock = threading.Lock()
state_lock = threading.Lock()

# Claim number -> claim id. Filing a claim number again returns its first id,
# as a claims system that deduplicates on the claim number does.
claims = {}
claim_ids = itertools.count(400101)
authorization_numbers = itertools.count(88201)
loan_numbers = itertools.count(5100234)

# Choice -> words of the prompt that pick it. The first choice of the request
# with one of its words in the prompt wins. When none has, the reply is
# "other", or the request's last choice if "other" is not among them.
CHOICE_KEYWORDS = {
    "auto": ("car", "vehicle", "collision", "windshield", "rear-ended"),
    "property": ("water", "leak", "fire", "roof", "storm", "flood", "burglary"),
    "liability": ("injury", "injured", "slipped", "lawsuit", "third party"),
}

# Words of the prompt -> the compliance concern they raise. A review with no
# concern is low risk, with one medium, with more high.
COMPLIANCE_RULES = [
    (("cash",), "Income paid in cash is undocumented; verify it before counting it."),
    (("left out", "undisclosed"), "The application leaves out income or debts that the notes mention."),
    (("co-owner", "co-signer"), "Another owner of the collateral has to consent to the lien."),
    (("gift",), "Gift funds need a gift letter and proof of their source."),
]


class Reply:
    def __init__(self, status, body=None, headers=None):
        self.status = status
        self.body = body
        self.headers = headers or {}


def now():
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def error(status, message):
    return Reply(status, {"error": message})


def json_object(request):
    """Returns the body as a JSON object, or a Reply that rejects it."""
    content_type = request.headers.get("Content-Type", "")
    if not content_type.startswith("application/json"):
        return error(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, f"expected application/json, got {content_type!r}")
    try:
        body = json.loads(request.body)
    except (UnicodeDecodeError, json.JSONDecodeError) as problem:
        return error(HTTPStatus.BAD_REQUEST, f"the body is not valid JSON: {problem}")
    if not isinstance(body, dict):
        return error(HTTPStatus.BAD_REQUEST, "the body must be a JSON object")
    return body


def missing_bearer_token(request):
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme != "Bearer" or not token.strip():
        reply = error(HTTPStatus.UNAUTHORIZED, "a bearer token is required")
        reply.headers["WWW-Authenticate"] = 'Bearer realm="claims"'
        return reply
    return None


def required_query(request, *names):
    """Returns the first value of each query parameter, or a Reply naming the missing ones."""
    values = [request.query.get(name, [""])[0] for name in names]
    missing = [name for name, value in zip(names, values) if not value]
    if missing:
        return error(HTTPStatus.BAD_REQUEST, "missing query parameters: " + ", ".join(missing))
    return values


def file_claim(request, claim_number):
    rejected = missing_bearer_token(request)
    if rejected:
        return rejected
    claim = json_object(request)
    if isinstance(claim, Reply):
        return claim
    if claim.get("claimNumber") != claim_number:
        return error(
            HTTPStatus.UNPROCESSABLE_ENTITY,
            f"claimNumber {claim.get('claimNumber')!r} does not match the URL's {claim_number!r}",
        )
    for field in ("policyId", "lossDate", "amount"):
        if field not in claim:
            return error(HTTPStatus.UNPROCESSABLE_ENTITY, f"{field} is required")
    with state_lock:
        known = claim_number in claims
        if not known:
            claims[claim_number] = f"CS-{next(claim_ids)}"
        claim_id = claims[claim_number]
    body = {
        "claim_id": claim_id,
        "claim_number": claim_number,
        "policy_id": claim["policyId"],
        "status": "received",
        "received_at": now(),
    }
    if known:
        return Reply(HTTPStatus.OK, body)
    return Reply(HTTPStatus.CREATED, body, {"Location": f"/claims-api/claims/{claim_number}"})


def update_policy_status(request, policy_id):
    rejected = missing_bearer_token(request)
    if rejected:
        return rejected
    content_type = request.headers.get("Content-Type", "")
    if "xml" not in content_type:
        return error(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, f"expected XML, got {content_type!r}")
    try:
        document = ElementTree.fromstring(request.body)
    except ElementTree.ParseError as problem:
        return error(HTTPStatus.BAD_REQUEST, f"the body is not well-formed XML: {problem}")
    if document.findtext("policyId") != policy_id:
        return error(HTTPStatus.UNPROCESSABLE_ENTITY, f"policyId does not match the URL's {policy_id!r}")
    if not document.findtext("status"):
        return error(HTTPStatus.UNPROCESSABLE_ENTITY, "status is required")
    return Reply(HTTPStatus.NO_CONTENT)


def check_authorization(request):
    values = required_query(request, "member", "code")
    if isinstance(values, Reply):
        return values
    member, code = values
    service_date = request.query.get("date", [""])[0]
    try:
        starts = date.fromisoformat(service_date) if service_date else date.today()
    except ValueError:
        return error(HTTPStatus.BAD_REQUEST, f"date {service_date!r} is not YYYY-MM-DD")
    with state_lock:
        reference = f"PA-{next(authorization_numbers)}"
    body = {
        "status": "approved",
        "reference": reference,
        "member": member,
        "code": code,
        "valid_through": (starts + timedelta(days=AUTHORIZATION_DAYS)).isoformat(),
        "decided_at": now(),
    }
    return Reply(HTTPStatus.OK, body, {"X-Trace-Id": str(uuid.uuid4())})


def open_application(request):
    application = json_object(request)
    if isinstance(application, Reply):
        return application
    for field in ("applicationId", "requestedAmount", "applicant"):
        if field not in application:
            return error(HTTPStatus.UNPROCESSABLE_ENTITY, f"{field} is required")
    with state_lock:
        loan_number = f"LN-{next(loan_numbers)}"
    body = {
        "loan_number": loan_number,
        "application_id": application["applicationId"],
        "status": "submitted",
        "submitted_at": now(),
    }
    return Reply(HTTPStatus.CREATED, body, {"Location": f"/los/applications/{loan_number}"})


def credit_score(request):
    values = required_query(request, "consent")
    if isinstance(values, Reply):
        return values
    body = {
        "score": 712,
        "model": "FICO Score 8",
        "consent": values[0],
        "reference": request.query.get("reference", [""])[0],
        "pulled_at": now(),
    }
    return Reply(HTTPStatus.OK, body)


def words(text):
    return len(text.split())


def prompt_text(messages):
    """Returns the text of the user messages, one per line."""
    texts = []
    for message in messages:
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        if isinstance(message.get("content"), str):
            texts.append(message["content"])
    return "\n".join(texts)


def mentions(text, keywords):
    """Returns whether `text` contains one of `keywords` as whole words, ignoring case."""
    return any(re.search(rf"\b{re.escape(keyword)}\b", text, re.IGNORECASE) for keyword in keywords)


def pick_choice(choices, prompt):
    for choice in choices:
        if mentions(prompt, CHOICE_KEYWORDS.get(choice, ())):
            return choice
    return "other" if "other" in choices else choices[-1]


def compliance_review(prompt):
    reasons = [reason for keywords, reason in COMPLIANCE_RULES if mentions(prompt, keywords)]
    if not reasons:
        risk = "low"
    elif len(reasons) == 1:
        risk = "medium"
    else:
        risk = "high"
    return {"flagged": bool(reasons), "reasons": reasons, "risk": risk}


def fill_schema(schema, name, known):
    """Returns a value for `schema`: `known[name]` for a property of that name, else a plain default."""
    if "anyOf" in schema:
        return fill_schema(schema["anyOf"][0], name, known)
    if name in known:
        return known[name]
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((each for each in kind if each != "null"), "null")
    if kind == "object":
        return {key: fill_schema(value, key, known) for key, value in schema.get("properties", {}).items()}
    if kind == "array":
        return []
    if kind == "boolean":
        return False
    if kind in ("number", "integer"):
        return 0
    if kind == "string":
        return date.today().isoformat() if schema.get("format") == "date" else ""
    return None


def extract_fields(schema, prompt):
    """Returns, for each property of `schema`, the text after the line of `prompt` labelled with its name."""
    values = {}
    for name in schema.get("properties", {}):
        label = r"\s+".join(re.escape(word) for word in name.split("_"))
        match = re.search(rf"^\s*{label}\s*:\s*(.+?)\s*$", prompt, re.IGNORECASE | re.MULTILINE)
        values[name] = match.group(1) if match else None
    return values


def summarise(prompt):
    """Returns the first sentence of the text after the prompt's first colon, or of the whole prompt."""
    _, colon, rest = prompt.partition(":")
    text = " ".join((rest if colon and rest.strip() else prompt).split())
    match = re.search(r"[.!?](\s|$)", text)
    return text[: match.start() + 1] if match else text


def reply_content(call, prompt):
    """Returns the reply's message content, in the shape that the request's response_format sets."""
    response_format = call.get("response_format") or {}
    json_schema = {}
    if response_format.get("type") == "json_schema":
        json_schema = response_format.get("json_schema") or {}
    schema = json_schema.get("schema") or {}

    if json_schema.get("name") == "extraction":
        return json.dumps(extract_fields(schema, prompt))
    if json_schema.get("name") == "choice":
        choices = schema.get("properties", {}).get("choice", {}).get("enum") or []
        if not choices:
            return error(HTTPStatus.BAD_REQUEST, "properties.choice.enum of the choice schema is missing")
        return json.dumps({"choice": pick_choice(choices, prompt)})
    if json_schema:
        return json.dumps(fill_schema(schema, None, compliance_review(prompt)))
    return summarise(prompt)


def chat_completion(request):
    call = json_object(request)
    if isinstance(call, Reply):
        return call
    messages = call.get("messages")
    if not isinstance(call.get("model"), str) or not call["model"]:
        return error(HTTPStatus.BAD_REQUEST, "model is missing")
    if not isinstance(messages, list) or not messages:
        return error(HTTPStatus.BAD_REQUEST, "messages must be a non-empty list")

    content = reply_content(call, prompt_text(messages))
    if isinstance(content, Reply):
        return content

    # One token a word. A text reply longer than `max_tokens` is cut there,
    # as a model stops at its limit.
    finish_reason = "stop"
    max_tokens = call.get("max_tokens")
    if isinstance(max_tokens, int) and "response_format" not in call and words(content) > max_tokens:
        content = " ".join(content.split()[:max_tokens])
        finish_reason = "length"
    prompt_tokens = sum(
        words(message["content"])
        for message in messages
        if isinstance(message, dict) and isinstance(message.get("content"), str)
    )
    completion_tokens = words(content)

    body = {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": call["model"],
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "finish_reason": finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }
    return Reply(HTTPStatus.OK, body)


# The folder of the samples' files, where each recording's transcript lies
# beside it.
FILES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "files")


def transcription(request):
    content_type = request.headers.get("Content-Type", "")
    if not content_type.startswith("multipart/form-data"):
        return error(HTTPStatus.BAD_REQUEST, "the body must be multipart/form-data")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + request.body
    )
    upload = None
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") == "file":
            upload = (part.get_filename() or "", part.get_payload(decode=True))
    if upload is None:
        return error(HTTPStatus.BAD_REQUEST, "the file part is missing")
    name, audio = upload
    stem = os.path.basename(name).rsplit(".", 1)[0]
    path = os.path.join(FILES, stem + ".txt")
    if not os.path.isfile(path):
        return error(HTTPStatus.BAD_REQUEST, f"no transcript for {name!r} in samples/files")
    with open(path) as file:
        text = file.read().strip()
    duration = 0.0
    if audio[:4] == b"RIFF" and audio[8:12] == b"WAVE":
        rate = int.from_bytes(audio[24:28], "little")
        bytes_per_second = int.from_bytes(audio[28:32], "little")
        duration = round((len(audio) - 44) / bytes_per_second, 3) if rate and bytes_per_second else 0.0
    body = {
        "task": "transcribe",
        "language": "english",
        "duration": duration,
        "text": text,
        "segments": [{"id": 0, "start": 0.0, "end": duration, "text": text}],
    }
    return Reply(HTTPStatus.OK, body)


# (method, path pattern, handler). Path groups are passed to the handler
# percent-decoded.
ROUTES = [
    ("POST", r"/claims-api/claims/([^/]+)", file_claim),
    ("PUT", r"/claims-api/policies/([^/]+)/status", update_policy_status),
    ("GET", r"/auth-api/auth", check_authorization),
    ("POST", r"/los/applications", open_application),
    ("GET", r"/bureau/score", credit_score),
    ("POST", r"/v1/chat/completions", chat_completion),
    ("POST", r"/v1/audio/transcriptions", transcription),
]


def route(request):
    allowed = []
    for method, pattern, handler in ROUTES:
        match = re.fullmatch(pattern, request.path)
        if not match:
            continue
        if method != request.method:
            allowed.append(method)
            continue
        return handler(request, *(unquote(group) for group in match.groups()))
    if allowed:
        reply = error(HTTPStatus.METHOD_NOT_ALLOWED, f"{request.method} is not allowed on {request.path}")
        reply.headers["Allow"] = ", ".join(allowed)
        return reply
    return error(HTTPStatus.NOT_FOUND, f"no route for {request.method} {request.path}")


class Request:
    def __init__(self, method, target, headers, body):
        parts = urlsplit(target)
        self.method = method
        self.target = target
        self.path = parts.path
        self.query = parse_qs(parts.query)
        self.headers = headers
        self.body = body


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "flowrun-sample-server"

    def do_GET(self):
        self.handle_request()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def handle_request(self):
        body, problem = self.read_body()
        request = Request(self.command, self.path, self.headers, body)
        if problem:
            reply = problem
            self.close_connection = True
        else:
            try:
                reply = route(request)
            except Exception as failure:
                # A bug in a route handler returns 500 instead of dropping the connection.
                traceback.print_exc()
                reply = error(HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(failure).__name__}: {failure}")
        self.send(reply)
        self.echo(request, reply)

    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", ""):
            return b"", error(HTTPStatus.LENGTH_REQUIRED, "send the body with a Content-Length")
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            return b"", error(HTTPStatus.BAD_REQUEST, "invalid Content-Length")
        if length < 0 or length > MAX_BODY_BYTES:
            return b"", error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"the limit is {MAX_BODY_BYTES} bytes")
        return self.rfile.read(length), None

    def send(self, reply):
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if reply.status == HTTPStatus.NO_CONTENT:
            self.end_headers()
            return
        payload = json.dumps(reply.body).encode() if reply.body is not None else b""
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def echo(self, request, reply):
        lines = [f"{request.method} {request.target}"]
        for name, value in request.headers.items():
            if name.lower() == "authorization":
                scheme, _, token = value.partition(" ")
                value = f"{scheme} ***" if token else "***"
            lines.append(f"  {name}: {value}")
        if request.body and request.headers.get("Content-Type", "").startswith("multipart/"):
            lines.append(f"  ({len(request.body)} bytes of multipart/form-data)")
        elif request.body:
            lines.append("")
            lines.extend("  " + line for line in request.body.decode("utf-8", "replace").splitlines())
        lines.append(f"-> {int(reply.status)} {HTTPStatus(reply.status).phrase}")
        if reply.body is not None:
            lines.append("  " + json.dumps(reply.body))
        with print_lock:
            print("\n".join(lines) + "\n", file=sys.stderr, flush=True)

    def log_message(self, format, *args):
        # echo() already logs every request; this keeps only the server's own errors.
        if not format.startswith('"%s" %s %s'):
            super().log_message(format, *args)


def main():
    parser = argparse.ArgumentParser(description="Serve the routes that the sample workflows call.")
    parser.add_argument("--port", type=int, default=8080, help="port on 127.0.0.1 (default: 8080)")
    options = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", options.port), Handler)
    server.daemon_threads = True
    print(f"sample server listening on http://127.0.0.1:{server.server_port}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
