//! PCM WAV files: loudness, silence, and splitting at quiet points into
//! files below a size limit.

use std::ops::Range;

/// The length of the windows loudness is measured in, in seconds.
const WINDOW_SECONDS: f64 = 0.02;

/// The length, in windows, of the span whose level decides where a file is
/// cut: 0.3 s, longer than most pauses between words.
const PAUSE_WINDOWS: usize = 15;

/// Windows whose RMS level is below this fraction of full scale (about
/// -54 dBFS) count as silent.
const SILENCE_RMS: f64 = 0.002;

/// A parsed WAV file.
#[derive(Debug, Clone, PartialEq)]
pub struct Wav {
    pub channels: u16,
    pub sample_rate: u32,
    pub bits_per_sample: u16,
    /// True for IEEE float samples, false for integer PCM.
    pub float: bool,
    /// The body of the `fmt ` chunk, copied into each split file.
    fmt: Vec<u8>,
    /// The sample data, within the file's bytes.
    data: Range<usize>,
}

impl Wav {
    fn frame_bytes(&self) -> usize {
        usize::from(self.channels) * usize::from(self.bits_per_sample / 8)
    }

    pub fn frames(&self) -> usize {
        (self.data.end - self.data.start) / self.frame_bytes()
    }

    pub fn duration_seconds(&self) -> f64 {
        self.frames() as f64 / f64::from(self.sample_rate)
    }

    /// The size of the header that [`Wav::file_for`] writes.
    fn header_len(&self) -> usize {
        12 + 8 + self.fmt.len() + self.fmt.len() % 2 + 8
    }

    /// One sample as a fraction of full scale.
    fn sample(&self, bytes: &[u8]) -> f64 {
        match (self.float, self.bits_per_sample) {
            (true, 32) => f64::from(f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])),
            (true, 64) => f64::from_le_bytes(bytes[..8].try_into().unwrap_or([0; 8])),
            (false, 8) => (f64::from(bytes[0]) - 128.0) / 128.0,
            (false, 16) => f64::from(i16::from_le_bytes([bytes[0], bytes[1]])) / 32768.0,
            (false, 24) => {
                f64::from(i32::from_le_bytes([0, bytes[0], bytes[1], bytes[2]]) >> 8) / 8_388_608.0
            }
            (false, 32) => {
                f64::from(i32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])) / 2_147_483_648.0
            }
            _ => 0.0,
        }
    }

    /// The RMS level of the frames in `frames`, over every channel.
    fn rms(&self, file: &[u8], frames: Range<usize>) -> f64 {
        let width = usize::from(self.bits_per_sample / 8);
        let start = self.data.start + frames.start * self.frame_bytes();
        let end = self.data.start + frames.end * self.frame_bytes();
        let samples = file[start..end].chunks_exact(width);
        let count = samples.len().max(1);
        let sum: f64 = samples.map(|sample| self.sample(sample).powi(2)).sum();
        (sum / count as f64).sqrt()
    }

    fn window_frames(&self) -> usize {
        ((f64::from(self.sample_rate) * WINDOW_SECONDS) as usize).max(1)
    }

    /// True when no window of the file is louder than the silence level.
    pub fn is_silent(&self, file: &[u8]) -> bool {
        let window = self.window_frames();
        let frames = self.frames();
        (0..frames)
            .step_by(window)
            .all(|start| self.rms(file, start..(start + window).min(frames)) < SILENCE_RMS)
    }

    /// A complete WAV file of the frames in `frames`.
    fn file_for(&self, file: &[u8], frames: Range<usize>) -> Vec<u8> {
        let data = &file[self.data.start + frames.start * self.frame_bytes()
            ..self.data.start + frames.end * self.frame_bytes()];
        let fmt_padded = self.fmt.len() + self.fmt.len() % 2;
        let riff_size = 4 + 8 + fmt_padded + 8 + data.len();
        let mut out = Vec::with_capacity(self.header_len() + data.len());
        out.extend_from_slice(b"RIFF");
        out.extend_from_slice(&(riff_size as u32).to_le_bytes());
        out.extend_from_slice(b"WAVE");
        out.extend_from_slice(b"fmt ");
        out.extend_from_slice(&(self.fmt.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.fmt);
        if self.fmt.len() % 2 == 1 {
            out.push(0);
        }
        out.extend_from_slice(b"data");
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(data);
        out
    }
}

/// The length of the header that [`write_mono16_header`] writes.
pub const MONO16_HEADER_LEN: usize = 44;

/// Writes the header of a mono 16-bit PCM WAV file into the first
/// [`MONO16_HEADER_LEN`] bytes of `file`, whose samples follow them.
pub fn write_mono16_header(file: &mut [u8], sample_rate: u32) {
    let data_len = (file.len() - MONO16_HEADER_LEN) as u32;
    let mut header = Vec::with_capacity(MONO16_HEADER_LEN);
    header.extend_from_slice(b"RIFF");
    header.extend_from_slice(&(data_len + 36).to_le_bytes());
    header.extend_from_slice(b"WAVEfmt ");
    header.extend_from_slice(&16u32.to_le_bytes());
    header.extend_from_slice(&1u16.to_le_bytes());
    header.extend_from_slice(&1u16.to_le_bytes());
    header.extend_from_slice(&sample_rate.to_le_bytes());
    header.extend_from_slice(&(sample_rate * 2).to_le_bytes());
    header.extend_from_slice(&2u16.to_le_bytes());
    header.extend_from_slice(&16u16.to_le_bytes());
    header.extend_from_slice(b"data");
    header.extend_from_slice(&data_len.to_le_bytes());
    file[..MONO16_HEADER_LEN].copy_from_slice(&header);
}

/// Parses the `fmt ` and `data` chunks of a WAV file.
pub fn parse(file: &[u8]) -> Result<Wav, String> {
    if file.len() < 12 || &file[..4] != b"RIFF" || &file[8..12] != b"WAVE" {
        return Err("it is not a RIFF WAVE file".to_string());
    }
    let mut position = 12;
    let mut fmt: Option<Vec<u8>> = None;
    let mut data = None;
    while position + 8 <= file.len() {
        let id = &file[position..position + 4];
        let size = u32::from_le_bytes([
            file[position + 4],
            file[position + 5],
            file[position + 6],
            file[position + 7],
        ]) as usize;
        let body = position + 8;
        // Streaming writers leave the size of the last chunk too large.
        let end = body.saturating_add(size).min(file.len());
        match id {
            b"fmt " => fmt = Some(file[body..end].to_vec()),
            b"data" => {
                data = Some(body..end);
                break;
            }
            _ => {}
        }
        position = end + (size % 2);
    }
    let fmt = fmt.ok_or("it has no `fmt ` chunk")?;
    let data = data.ok_or("it has no `data` chunk")?;
    if fmt.len() < 16 {
        return Err("its `fmt ` chunk is too short".to_string());
    }
    let tag = u16::from_le_bytes([fmt[0], fmt[1]]);
    let channels = u16::from_le_bytes([fmt[2], fmt[3]]);
    let sample_rate = u32::from_le_bytes([fmt[4], fmt[5], fmt[6], fmt[7]]);
    let bits_per_sample = u16::from_le_bytes([fmt[14], fmt[15]]);
    // WAVE_FORMAT_EXTENSIBLE names the real format in its sub-format GUID.
    let tag = if tag == 0xfffe && fmt.len() >= 26 {
        u16::from_le_bytes([fmt[24], fmt[25]])
    } else {
        tag
    };
    let float = match (tag, bits_per_sample) {
        (1, 8 | 16 | 24 | 32) => false,
        (3, 32 | 64) => true,
        _ => {
            return Err(format!(
                "its encoding (format {tag}, {bits_per_sample} bits) is not PCM or float; only those can be split"
            ))
        }
    };
    if channels == 0 || sample_rate == 0 {
        return Err("its `fmt ` chunk declares no channels or no sample rate".to_string());
    }
    Ok(Wav {
        channels,
        sample_rate,
        bits_per_sample,
        float,
        fmt,
        data,
    })
}

/// Splits a WAV file into files of at most `limit` bytes each, cutting in
/// the quietest 0.3 s of the second half of each stretch that fits.
/// Returns each file with its start time in seconds.
pub fn split(file: &[u8], limit: u64) -> Result<Vec<(f64, Vec<u8>)>, String> {
    let wav = parse(file)?;
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let room = limit.saturating_sub(wav.header_len());
    let max_frames = room / wav.frame_bytes();
    let window = wav.window_frames();
    if max_frames < window * 4 {
        return Err(format!(
            "a limit of {limit} bytes leaves room for less than {} ms of audio per request",
            (WINDOW_SECONDS * 4000.0) as u32
        ));
    }
    let total = wav.frames();
    let mut pieces = Vec::new();
    let mut start = 0;
    while total - start > max_frames {
        let search_start = start + max_frames / 2;
        let search_end = start + max_frames;
        // A pause between sentences is longer than one between words, so
        // the level is measured over a wider span than a word gap, moved
        // one window at a time.
        let span = (window * PAUSE_WINDOWS).min(max_frames / 4);
        let mut best = (f64::INFINITY, search_end);
        let mut span_start = search_start;
        while span_start + span <= search_end {
            let level = wav.rms(file, span_start..span_start + span);
            if level < best.0 {
                best = (level, span_start + span / 2);
            }
            span_start += window;
        }
        let cut = best.1.min(search_end);
        pieces.push((
            start as f64 / f64::from(wav.sample_rate),
            wav.file_for(file, start..cut),
        ));
        start = cut;
    }
    pieces.push((
        start as f64 / f64::from(wav.sample_rate),
        wav.file_for(file, start..total),
    ));
    Ok(pieces)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A mono 16-bit WAV at 1000 Hz: `loud` seconds of a square wave at
    /// full scale, then `quiet` seconds of silence, repeated.
    fn tone_and_pause(pattern: &[(f64, bool)]) -> Vec<u8> {
        let mut samples: Vec<i16> = Vec::new();
        for &(seconds, loud) in pattern {
            for index in 0..(seconds * 1000.0) as usize {
                samples.push(if loud {
                    if index % 2 == 0 {
                        20_000
                    } else {
                        -20_000
                    }
                } else {
                    0
                });
            }
        }
        let mut fmt = Vec::new();
        fmt.extend_from_slice(&1u16.to_le_bytes());
        fmt.extend_from_slice(&1u16.to_le_bytes());
        fmt.extend_from_slice(&1000u32.to_le_bytes());
        fmt.extend_from_slice(&2000u32.to_le_bytes());
        fmt.extend_from_slice(&2u16.to_le_bytes());
        fmt.extend_from_slice(&16u16.to_le_bytes());
        let wav = Wav {
            channels: 1,
            sample_rate: 1000,
            bits_per_sample: 16,
            float: false,
            fmt,
            data: 0..samples.len() * 2,
        };
        let data: Vec<u8> = samples.iter().flat_map(|sample| sample.to_le_bytes()).collect();
        wav.file_for(&data, 0..samples.len())
    }

    #[test]
    fn files_are_split_in_the_pause() {
        // 1 s tone, 0.3 s pause, 1 s tone: 4600 bytes of samples.
        let file = tone_and_pause(&[(1.0, true), (0.3, false), (1.0, true)]);
        let pieces = split(&file, 3000).unwrap();
        assert_eq!(pieces.len(), 2);
        let (offset, second) = &pieces[1];
        assert!((1.0..1.3).contains(offset), "cut at {offset} s, not in the pause");
        assert!(pieces.iter().all(|(_, piece)| piece.len() <= 3000));
        let frames: usize = pieces
            .iter()
            .map(|(_, piece)| parse(piece).unwrap().frames())
            .sum();
        assert_eq!(frames, 2300);
        assert_eq!(parse(second).unwrap().sample_rate, 1000);
    }

    #[test]
    fn a_small_file_stays_whole() {
        let file = tone_and_pause(&[(0.5, true)]);
        let pieces = split(&file, 1 << 20).unwrap();
        assert_eq!(pieces, vec![(0.0, file.clone())]);
    }

    #[test]
    fn a_mono16_header_describes_its_samples() {
        let mut file = vec![0; MONO16_HEADER_LEN];
        file.extend_from_slice(&[1, 0, 2, 0, 3, 0]);
        write_mono16_header(&mut file, 16_000);
        let wav = parse(&file).unwrap();
        assert_eq!(
            (
                wav.channels,
                wav.sample_rate,
                wav.bits_per_sample,
                wav.float,
                wav.frames()
            ),
            (1, 16_000, 16, false, 3)
        );
        assert_eq!(wav.header_len(), MONO16_HEADER_LEN);
    }

    #[test]
    fn silence_is_detected() {
        let silent = tone_and_pause(&[(0.5, false)]);
        let loud = tone_and_pause(&[(0.4, false), (0.1, true)]);
        assert!(parse(&silent).unwrap().is_silent(&silent));
        assert!(!parse(&loud).unwrap().is_silent(&loud));
    }

    #[test]
    fn other_encodings_are_refused() {
        let mut file = tone_and_pause(&[(0.1, true)]);
        file[20] = 2; // ADPCM
        assert!(parse(&file).unwrap_err().contains("format 2"));
        assert!(parse(b"RIFF\x04\x00\x00\x00WAVE")
            .unwrap_err()
            .contains("no `fmt `"));
    }
}
