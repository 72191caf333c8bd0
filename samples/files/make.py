"""Writes the documents and the recording that the samples read.

    PYTHONPATH=DIR python3 samples/files/make.py

DIR holds the PyPI package reportlab; espeak-ng (Debian) speaks the call.
The files are committed, so running a sample needs neither.
"""

import audioop
import os
import subprocess
import tempfile
import wave

from reportlab.lib.pagesizes import letter
from reportlab.pdfgen import canvas

HERE = os.path.dirname(os.path.abspath(__file__))


def pdf(name, lines):
    c = canvas.Canvas(os.path.join(HERE, name), pagesize=letter, invariant=1)
    c.setFont("Helvetica", 12)
    for index, line in enumerate(lines):
        c.drawString(72, 720 - 18 * index, line)
    c.showPage()
    c.save()


def call(name, text):
    """Speaks `text` and stores it as 8 kHz, 8-bit mono PCM, which keeps the file small."""
    with tempfile.TemporaryDirectory() as folder:
        spoken = os.path.join(folder, "spoken.wav")
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "130", "-w", spoken, text], check=True)
        with wave.open(spoken) as source:
            frames = source.readframes(source.getnframes())
            rate = source.getframerate()
    frames, _ = audioop.ratecv(frames, 2, 1, rate, 8000, None)
    frames = audioop.bias(audioop.lin2lin(frames, 2, 1), 1, 128)
    with wave.open(os.path.join(HERE, name), "wb") as target:
        target.setnchannels(1)
        target.setsampwidth(1)
        target.setframerate(8000)
        target.writeframes(frames)
    with open(os.path.join(HERE, name.rsplit(".", 1)[0] + ".txt"), "w") as transcript:
        transcript.write(text + "\n")


if __name__ == "__main__":
    pdf("homeowners_policy.pdf", [
        "Cascade Home Insurance - Homeowners Policy Declarations",
        "Policy number: POL-HO-7731902",
        "Named insured: Dana O'Brien",
        "Effective date: January 15, 2026",
        "Coverage level: Standard",
        "Annual premium: $1,842.00",
        "Deductible: $1,000.00",
    ])
    pdf("financial_statement.pdf", [
        "Personal Financial Statement",
        "Applicant: Marcus Okafor",
        "Statement date: November 30, 2026",
        "Gross annual income: $86,400.00",
        "Monthly debt payments: $1,150.00",
        "Total liabilities: $31,780.00",
    ])
    call("patient_call.wav", "The patient called to confirm the appointment for next Tuesday.")
