//! Decoding of compressed recordings (MP3, FLAC, Ogg Vorbis, AAC in
//! M4A or MP4) with Symphonia into a mono 16-bit PCM WAV file, so that a
//! recording above the upload limit can be split like a WAV file.
//!
//! The channels are averaged into one. A rate above 16 kHz, the rate that
//! speech recognisers work at, is lowered to 16 kHz: a fourth-order
//! Butterworth low-pass at 7.2 kHz, then linear interpolation. The result
//! takes 32 KB a second.

use std::io::Cursor;

use bytes::Bytes;
use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{DecoderOptions, CODEC_TYPE_NULL};
use symphonia::core::errors::Error;
use symphonia::core::formats::FormatOptions;
use symphonia::core::io::{MediaSourceStream, MediaSourceStreamOptions};
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

use super::wav;
use super::AudioFormat;

/// The rate that decoded audio is lowered to when it is higher.
pub const TARGET_RATE: u32 = 16_000;

/// Decodes `bytes` of `format` into a mono 16-bit PCM WAV file.
pub fn to_wav(bytes: Bytes, format: AudioFormat) -> Result<Vec<u8>, String> {
    let mut hint = Hint::new();
    hint.with_extension(format.extension());
    let source = MediaSourceStream::new(Box::new(Cursor::new(bytes)), MediaSourceStreamOptions::default());
    let probed = symphonia::default::get_probe()
        .format(
            &hint,
            source,
            &FormatOptions::default(),
            &MetadataOptions::default(),
        )
        .map_err(|error| format!("its container cannot be read ({error})"))?;
    let mut reader = probed.format;
    let track = reader
        .tracks()
        .iter()
        .find(|track| track.codec_params.codec != CODEC_TYPE_NULL)
        .ok_or("it holds no audio track")?;
    let track_id = track.id;
    let mut decoder = symphonia::default::get_codecs()
        .make(&track.codec_params, &DecoderOptions::default())
        .map_err(|error| format!("its codec cannot be decoded ({error})"))?;

    let mut file = vec![0; wav::MONO16_HEADER_LEN];
    let mut converter: Option<Converter> = None;
    let mut mono = Vec::new();
    loop {
        let packet = match reader.next_packet() {
            Ok(packet) => packet,
            Err(Error::IoError(error)) if error.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(Error::ResetRequired) => break,
            Err(error) => return Err(format!("reading it failed ({error})")),
        };
        if packet.track_id() != track_id {
            continue;
        }
        let decoded = match decoder.decode(&packet) {
            Ok(decoded) => decoded,
            // A damaged packet is skipped, as players do.
            Err(Error::DecodeError(_)) => continue,
            Err(error) => return Err(format!("decoding it failed ({error})")),
        };
        let spec = *decoded.spec();
        let channels = spec.channels.count().max(1);
        let converter = converter.get_or_insert_with(|| Converter::new(spec.rate));
        if converter.input_rate != spec.rate {
            return Err(format!(
                "its sample rate changes from {} Hz to {} Hz",
                converter.input_rate, spec.rate
            ));
        }
        let mut samples = SampleBuffer::<f32>::new(decoded.capacity() as u64, spec);
        samples.copy_interleaved_ref(decoded);
        mono.clear();
        mono.extend(
            samples
                .samples()
                .chunks_exact(channels)
                .map(|frame| frame.iter().sum::<f32>() / channels as f32),
        );
        converter.push(&mono, &mut file);
    }
    let Some(converter) = converter else {
        return Err("it holds no audio".to_string());
    };
    wav::write_mono16_header(&mut file, converter.output_rate);
    Ok(file)
}

/// Lowers a mono stream to [`TARGET_RATE`] when it is higher, and writes
/// it as 16-bit little-endian samples.
struct Converter {
    input_rate: u32,
    output_rate: u32,
    filters: Option<[Biquad; 2]>,
    /// Input samples per output sample.
    step: f64,
    /// The position of the next output sample, in input samples.
    position: f64,
    /// The number of input samples received.
    received: u64,
    previous: f32,
}

impl Converter {
    fn new(input_rate: u32) -> Converter {
        let output_rate = input_rate.clamp(1, TARGET_RATE);
        let filters = (input_rate > TARGET_RATE).then(|| {
            let cutoff = 0.45 * f64::from(TARGET_RATE);
            // The two sections of a fourth-order Butterworth filter.
            [
                Biquad::low_pass(f64::from(input_rate), cutoff, 0.541_196_1),
                Biquad::low_pass(f64::from(input_rate), cutoff, 1.306_563),
            ]
        });
        Converter {
            input_rate,
            output_rate,
            filters,
            step: f64::from(input_rate.max(1)) / f64::from(output_rate),
            position: 0.0,
            received: 0,
            previous: 0.0,
        }
    }

    fn push(&mut self, samples: &[f32], out: &mut Vec<u8>) {
        let Some(filters) = &mut self.filters else {
            for &sample in samples {
                out.extend_from_slice(&to_i16(sample).to_le_bytes());
            }
            return;
        };
        for &sample in samples {
            let first = filters[0].process(f64::from(sample));
            let filtered = filters[1].process(first) as f32;
            let index = self.received as f64;
            if self.received == 0 {
                self.previous = filtered;
            }
            while self.position <= index {
                let fraction = (self.position - (index - 1.0)) as f32;
                let value = self.previous + (filtered - self.previous) * fraction;
                out.extend_from_slice(&to_i16(value).to_le_bytes());
                self.position += self.step;
            }
            self.previous = filtered;
            self.received += 1;
        }
    }
}

fn to_i16(sample: f32) -> i16 {
    (sample.clamp(-1.0, 1.0) * 32767.0).round() as i16
}

/// A second-order low-pass section (direct form I).
struct Biquad {
    b0: f64,
    b1: f64,
    b2: f64,
    a1: f64,
    a2: f64,
    x1: f64,
    x2: f64,
    y1: f64,
    y2: f64,
}

impl Biquad {
    fn low_pass(rate: f64, cutoff: f64, q: f64) -> Biquad {
        let omega = 2.0 * std::f64::consts::PI * cutoff / rate;
        let alpha = omega.sin() / (2.0 * q);
        let cos = omega.cos();
        let a0 = 1.0 + alpha;
        Biquad {
            b0: (1.0 - cos) / 2.0 / a0,
            b1: (1.0 - cos) / a0,
            b2: (1.0 - cos) / 2.0 / a0,
            a1: -2.0 * cos / a0,
            a2: (1.0 - alpha) / a0,
            x1: 0.0,
            x2: 0.0,
            y1: 0.0,
            y2: 0.0,
        }
    }

    fn process(&mut self, x: f64) -> f64 {
        let y = self.b0 * x + self.b1 * self.x1 + self.b2 * self.x2 - self.a1 * self.y1 - self.a2 * self.y2;
        self.x2 = self.x1;
        self.x1 = x;
        self.y2 = self.y1;
        self.y1 = y;
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(file: &[u8]) -> Vec<i16> {
        file.chunks_exact(2)
            .map(|pair| i16::from_le_bytes([pair[0], pair[1]]))
            .collect()
    }

    #[test]
    fn rate_at_or_below_target_is_kept() {
        let mut converter = Converter::new(8_000);
        let mut out = Vec::new();
        converter.push(&[0.0, 0.5, -0.5, 1.5], &mut out);
        assert_eq!(converter.output_rate, 8_000);
        assert_eq!(samples(&out), vec![0, 16384, -16384, 32767]);
    }

    #[test]
    fn higher_rate_is_lowered_to_target() {
        let mut converter = Converter::new(48_000);
        let mut out = Vec::new();
        // One second of a 440 Hz tone, in pieces as packets come.
        let tone: Vec<f32> = (0..48_000)
            .map(|index| 0.5 * (2.0 * std::f32::consts::PI * 440.0 * index as f32 / 48_000.0).sin())
            .collect();
        for piece in tone.chunks(1152) {
            converter.push(piece, &mut out);
        }
        let out = samples(&out);
        assert_eq!(converter.output_rate, TARGET_RATE);
        assert_eq!(out.len(), 16_000);
        // The tone passes the filter at its level, a peak of about 16384.
        let peak = out[8_000..]
            .iter()
            .map(|sample| sample.unsigned_abs())
            .max()
            .unwrap();
        assert!((15_500..=17_000).contains(&peak), "peak {peak}");
    }

    #[test]
    fn tone_above_new_band_is_removed() {
        let mut converter = Converter::new(48_000);
        let mut out = Vec::new();
        let tone: Vec<f32> = (0..48_000)
            .map(|index| 0.5 * (2.0 * std::f32::consts::PI * 20_000.0 * index as f32 / 48_000.0).sin())
            .collect();
        converter.push(&tone, &mut out);
        let out = samples(&out);
        let peak = out[8_000..]
            .iter()
            .map(|sample| sample.unsigned_abs())
            .max()
            .unwrap();
        // Far above the cutoff, at least 32 dB down from a peak of 16384.
        assert!(peak < 410, "peak {peak}");
    }

    #[test]
    fn data_that_is_not_audio_is_rejected() {
        let error = to_wav(Bytes::from_static(b"fLaC but not really"), AudioFormat::Flac).unwrap_err();
        assert!(error.contains("cannot be read"), "{error}");
    }
}
