"""An OpenAI-compatible speech-to-text server for the transcription tests.

    python3 server.py --model DIR [--port 0] [--threads 1]

It serves POST /v1/audio/transcriptions (multipart/form-data with model,
language, prompt, response_format, temperature and file) with faster-whisper
and GET /health, on 127.0.0.1 only. When it listens it prints
"listening on http://127.0.0.1:PORT" on standard output.
"""

import argparse
import email.parser
import email.policy
import io
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from faster_whisper import WhisperModel

# The file name extensions and media types the OpenAI endpoint accepts.
EXTENSIONS = {"flac", "m4a", "mp3", "mp4", "mpeg", "mpga", "oga", "ogg", "wav", "webm"}
MEDIA_TYPES = {
    "audio/flac", "audio/x-flac", "audio/mp4", "audio/m4a", "audio/x-m4a", "audio/mpeg", "audio/mp3",
    "audio/mpga", "audio/ogg", "audio/wav", "audio/x-wav", "audio/wave", "audio/webm", "video/mp4",
    "video/mpeg", "video/webm", "application/octet-stream",
}
MAX_BYTES = 25 * 1024 * 1024


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):
        sys.stderr.write("stt-server: " + (format % args) + "\n")

    def reply(self, status, value):
        body = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def error(self, status, message, param=None):
        self.reply(status, {"error": {"message": message, "type": "invalid_request_error", "param": param}})

    def do_GET(self):
        if self.path == "/health":
            self.reply(200, {"status": "ok"})
        else:
            self.error(404, f"no route GET {self.path}")

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BYTES:
            self.rfile.read(length)
            self.error(413, f"the file is {length} bytes; the limit is {MAX_BYTES}")
            return
        body = self.rfile.read(length)
        if self.path.split("?")[0] != "/v1/audio/transcriptions":
            self.error(404, f"no route POST {self.path}")
            return
        content_type = self.headers.get("Content-Type", "")
        if not content_type.startswith("multipart/form-data"):
            self.error(400, "the body must be multipart/form-data")
            return
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
        )
        fields, upload = {}, None
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if name == "file":
                upload = (part.get_filename(), part.get_content_type(), part.get_payload(decode=True))
            elif name:
                fields[name] = part.get_payload(decode=True).decode()
        if "model" not in fields:
            self.error(400, "model is required", "model")
            return
        if upload is None:
            self.error(400, "file is required", "file")
            return
        filename, media_type, data = upload
        extension = (filename or "").rsplit(".", 1)[-1].lower()
        if extension not in EXTENSIONS or media_type not in MEDIA_TYPES:
            self.error(400, f"Invalid file format. Supported formats: {sorted(EXTENSIONS)}", "file")
            return
        response_format = fields.get("response_format", "json")
        try:
            with LOCK:
                segments, info = MODEL.transcribe(
                    io.BytesIO(data),
                    language=fields.get("language") or None,
                    initial_prompt=fields.get("prompt") or None,
                    temperature=float(fields.get("temperature", "0")),
                    beam_size=1,
                    vad_filter=False,
                )
                segments = list(segments)
        except Exception as error:  # an undecodable file
            self.error(400, f"the audio could not be decoded: {error}", "file")
            return
        text = "".join(segment.text for segment in segments).strip()
        if response_format == "text":
            body = text.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif response_format == "verbose_json":
            self.reply(200, {
                "task": "transcribe",
                "language": info.language,
                "duration": round(info.duration, 3),
                "text": text,
                "segments": [
                    {"id": index, "start": round(s.start, 3), "end": round(s.end, 3), "text": s.text}
                    for index, s in enumerate(segments)
                ],
            })
        else:
            self.reply(200, {"text": text})


def main():
    global MODEL, LOCK
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    MODEL = WhisperModel(args.model, device="cpu", compute_type="int8", cpu_threads=args.threads)
    LOCK = threading.Lock()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
