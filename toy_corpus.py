"""
Offline toy corpora: a tiny source-filter speech synthesizer that writes a
speaker-verification set in the VoxCeleb1 layout and an anti-spoofing set in
the ASVspoof5 layout. (It lives apart from data.py because it is a separate
concept: a synthesizer for an offline corpus, not a loader.)

Why synthesize instead of downloading: the toy recipes must run on a laptop
CPU with no network and no system packages, yet go through exactly the same
loaders as the real data (data.py parses these folders with its VoxCeleb1 and
ASVspoof5 code). So the corpus has to be made here, from a seed, in seconds.

The synthesizer is a classic source-filter model (Fant 1960; Klatt 1980):
  source   a Rosenberg glottal pulse train following an F0 contour (with
           declination, intonation, jitter, shimmer) plus aspiration noise,
           and a white-noise source for fricatives and bursts;
  filter   a cascade of five formant resonances whose targets come from a
           vowel table (Peterson & Barney 1952 male averages) and move
           smoothly between phones (coarticulation); it is applied as a
           spectral envelope in the STFT domain, which vectorizes over time.
Speaker identity = vocal-tract length (one scale on all formants), a private
vowel space (small per-vowel formant offsets), high-formant positions, F0
level and range, glottal open quotient and spectral tilt, breathiness,
jitter/shimmer and speaking rate. Sessions (the "videos") change the channel:
a random smooth EQ, band limits, reverberation, additive noise and gain; and
the speaker's state a little (F0, effort, rate). That is what makes the toy
SV task non-trivial: MFCC means mostly measure the channel.

Spoofs (CM) are resyntheses of freshly synthesized bona fide speech, then passed
through the same random channels as bona fide speech:
  A01  mel spectrogram (80 bands) -> Griffin-Lim phase reconstruction;
  A02  LPC vocoder: all-pole envelope + pulse/noise excitation;
  A04  hybrid vocoder: the bona fide signal itself below a random cut-off of
       0.3-1.5 kHz, and above it the LPC vocoder of A02 (jitter-free pulses);
  A03  cepstral vocoder: liftered log-spectrum envelope + mixed excitation
       (pulses below a cut-off, noise above). Unseen: eval only;
  A05  voice conversion that keeps part of the source: the bona fide LPC
       residual (with the source's jitter, shimmer and pulse shape) mixed with
       a share of 30-90% of jitter-free vocoder pulses, through a
       frequency-warped, coarser (LPC order 10), over-smoothed envelope.
       Unseen: eval only.
A01-A03 over-smooth the spectral trajectories in time, as statistical TTS /
VC models do, and lack the source's jitter, shimmer and pulse shape: they are
easy for a trained model. A04 and A05 keep part of the bona fide signal chain
(the low band, or part of the source), in amounts drawn per file, so their
traces range from plain to faint.
Eval also differs in its transmission: 60% of the eval files, bona fide and
spoof alike, pass through a codec that train and dev never show: narrow-band
telephony (8 kHz resampling, 8-bit mu-law) or a transform codec (spectral
bins more than 30 dB under the frame's peak dropped, magnitudes quantized in
2-dB steps). The codec both removes attack traces (the narrow band removes
most of A04's vocoded band) and adds artifacts of its own to bona fide speech.
(Version 2 had A01-A03 and no codecs; a trained model reached 0% EER on every
split.)

Everything is deterministic from the seed: each file has its own numpy
generator seeded by (seed, corpus, role, indices), so files do not depend on
generation order. A corpus is written into a temporary sibling folder and
renamed into place only when complete (with a marker file), so an interrupted
generation is never mistaken for a corpus.
"""

import json
import os
import shutil
import time

import numpy as np
import soundfile as sf
import torch
import torchaudio

SR = 16000          # must equal data.SAMPLE_RATE (checked in the tests)
N_FFT, HOP = 512, 128   # 32-ms window, 8-ms hop: the synthesizer's frame grid
VERSION = 3         # bump when the synthesizer changes, to invalidate caches
MARKER = "TOY_CORPUS.json"

# Corpus sizes. "default" is sized for the 10-minute CPU budget of the full toy
# recipe (generation + training + evaluation); "tiny" is for unit tests.
SIZES = {
    "sv": {
        # 40 train speakers x 3 sessions x 4 utts = 480 files (~24 min audio);
        # 24 test speakers x 4 sessions x 3 utts = 288 files; 2,400 trials (1,200 target
        # out of the 1,296 cross-session pairs), so that one trial moves the EER by at
        # most 1/1200 = 0.08 points: differences between systems of a point or two can
        # then be told from noise. (Version 2 had 10 test speakers and 600 trials:
        # 0.33 points per trial.) The test side adds ~15 s of embedding per evaluation.
        "default": dict(train_spk=40, train_sess=3, train_utt=4,
                        test_spk=24, test_sess=4, test_utt=3, trials=2400, dur=(2.0, 4.0)),
        "tiny": dict(train_spk=3, train_sess=2, train_utt=2,
                     test_spk=3, test_sess=2, test_utt=2, trials=12, dur=(0.6, 1.0)),
    },
    "cm": {
        # per split: speakers, bona fide utts per speaker, spoofs per attack.
        # train 240 bona + 240 spoof; dev 60 + 60; eval 200 + 300 (160 unseen), so that
        # one eval trial moves the EER by at most 0.5 points.
        "default": dict(train=(24, 10, {"A01": 80, "A02": 80, "A04": 80}),
                        dev=(6, 10, {"A01": 20, "A02": 20, "A04": 20}),
                        eval=(20, 10, {"A01": 40, "A02": 40, "A04": 60, "A03": 60, "A05": 100}),
                        dur=(2.0, 4.0), eval_codec_p=0.6),
        "tiny": dict(train=(2, 3, {"A01": 1, "A02": 1, "A04": 2}), dev=(1, 2, {"A01": 1, "A04": 1}),
                     eval=(1, 2, {"A01": 1, "A04": 1, "A03": 1, "A05": 1}), dur=(0.6, 1.0),
                     eval_codec_p=0.6),
    },
    "unlabelled": {
        # for pretrain.py: 500 speakers x 2 sessions x 2 utts = 2,000 files, about 100 min
        # of audio, 12x the labelled SV training speakers (the paper's WavLM Base+ saw
        # 94k hours before its 2.4k hours of VoxCeleb2 fine-tuning).
        "default": dict(speakers=500, sessions=2, utts=2, dur=(2.0, 4.0)),
        "tiny": dict(speakers=3, sessions=1, utts=2, dur=(1.0, 1.5)),
    },
}

# ----------------------------------------------------------------------------
# phone inventory

# Vowel formant targets F1..F3 in Hz for an adult male (Peterson & Barney).
VOWELS = np.array([
    [270, 2290, 3010], [390, 1990, 2550], [530, 1840, 2480], [660, 1720, 2410],
    [730, 1090, 2440], [570, 840, 2410], [440, 1020, 2240], [300, 870, 2240],
    [640, 1190, 2390], [490, 1350, 1690]], dtype=np.float64)
# Voiced consonants: (F1, F2, F3, gain). Nasals are weak, the liquid in between.
SONORANTS = [(250, 1000, 2200, 0.25), (250, 1500, 2500, 0.25), (360, 1300, 2700, 0.5)]
# Fricatives and bursts: (noise centre Hz, noise bandwidth Hz, gain).
FRICATIVES = [(5500, 2500, 0.35), (3000, 1500, 0.4), (4500, 6000, 0.1)]
BURSTS = [(1000, 2000, 0.5), (4000, 3000, 0.5), (2000, 1500, 0.5)]

_FREQS = np.fft.rfftfreq(N_FFT, 1 / SR)     # (257,) STFT bin frequencies
_WINDOW = torch.hann_window(N_FFT, dtype=torch.float64)


def _stft(x):
    return torch.stft(torch.as_tensor(x, dtype=torch.float64), N_FFT, HOP,
                      window=_WINDOW, return_complex=True)


def _istft(X, n):
    return torch.istft(X, N_FFT, HOP, window=_WINDOW, length=n).numpy()


def _resonance(f, fc, bw):
    """Magnitude of a 2nd-order analog resonance with unit gain at DC."""
    return fc ** 2 / np.sqrt((fc ** 2 - f ** 2) ** 2 + (bw * f) ** 2)


def _bandpass(f, fc, bw):
    """Magnitude of a 2nd-order analog band-pass with unit gain at fc."""
    return bw * f / np.sqrt((fc ** 2 - f ** 2) ** 2 + (bw * f) ** 2 + 1e-9)


def _smooth(x, width):
    """Moving average along axis 0, edge-padded (coarticulation, intonation,
    over-smoothing)."""
    if width <= 1:
        return x
    k = np.ones(width) / width
    pad = [(width // 2, width - 1 - width // 2)] + [(0, 0)] * (x.ndim - 1)
    xp = np.pad(x, pad, mode="edge")
    return np.apply_along_axis(lambda c: np.convolve(c, k, mode="valid"), 0, xp)


# ----------------------------------------------------------------------------
# speakers, sessions, channels

def make_speaker(rng):
    """Draw one speaker's voice. The spreads are tuned so that speakers overlap
    (same gender and similar tract length are common) but stay separable."""
    female = rng.random() < 0.5
    scale = rng.normal(1.16 if female else 1.0, 0.06)       # vocal-tract length
    return dict(
        gender="F" if female else "M",
        scale=scale,
        f0=(205 if female else 115) * np.exp(rng.normal(0, 0.14)),
        f0_range=rng.uniform(1.0, 4.0),                      # semitones of intonation
        formant_dev=rng.normal(0, 0.07, 3),                  # tract shape, per formant
        vowel_dev=rng.normal(0, 0.06, (len(VOWELS), 3)),     # private vowel space
        f45=np.array([3400, 4400]) * scale * np.exp(rng.normal(0, 0.08, 2)),
        bw=np.exp(rng.normal(0, 0.2)),                       # formant damping
        oq=rng.uniform(0.4, 0.75),                           # glottal open quotient
        tilt=rng.normal(0, 3.0),                             # extra source tilt, dB/oct
        breath=rng.uniform(0.0, 0.3),
        jitter=rng.uniform(0.003, 0.02),
        shimmer=rng.uniform(0.02, 0.12),
        rate=np.exp(rng.normal(0, 0.12)),
    )


def session_state(spk, rng):
    """A speaker on a given day: slightly different pitch, effort and pace."""
    s = dict(spk)
    s["f0"] = spk["f0"] * np.exp(rng.normal(0, 0.05))
    s["tilt"] = spk["tilt"] + rng.normal(0, 1.0)
    s["rate"] = spk["rate"] * np.exp(rng.normal(0, 0.05))
    s["scale"] = spk["scale"] * np.exp(rng.normal(0, 0.01))
    return s


# Channel strength per corpus, tuned so that the classical baselines land in
# the 5-30% EER range (benchmarks/toy_baselines.py). SV sessions differ more
# (the nuisance a speaker embedding must learn to ignore; noisier channels made
# MFCC statistics near chance, as they have no speech activity detection). CM
# files get a milder channel, so vocoder traces are not all drowned (ASVspoof5
# is mostly clean read speech).
CHANNELS = {
    "sv": dict(tilt_db=1.0, eq_db=1.5, lowpass_p=0.4, reverb_p=0.5, snr=(15, 35),
               noises=("white", "pink", "speechy")),
    "cm": dict(tilt_db=0.75, eq_db=1.25, lowpass_p=0.25, reverb_p=0.35, snr=(18, 40),
               noises=("white", "pink")),
}


def make_channel(rng, kind="sv"):
    """A recording channel: zero-phase smooth EQ (+ band limits), optional
    reverberation, an additive noise type with a mean SNR, and a gain."""
    c = CHANNELS[kind]
    logf = np.log2(np.maximum(_FREQS, 50) / 1000)            # octaves re 1 kHz
    eq_db = rng.normal(0, c["tilt_db"]) * logf
    u = (logf + 4.3) / 7.3                                   # 50 Hz..8 kHz -> 0..1
    for j in range(1, 5):                                    # smooth wiggles in log-frequency
        eq_db += rng.normal(0, c["eq_db"]) * np.cos(j * np.pi * u + rng.uniform(0, 2 * np.pi))
    eq = 10 ** (eq_db / 20)
    if rng.random() < c["lowpass_p"]:                        # telephone-ish or muffled
        fc = rng.uniform(3400, 7000)
        eq = eq / np.sqrt(1 + (_FREQS / fc) ** 8)
    fh = rng.uniform(40, 250)
    eq = eq * (_FREQS / fh) ** 2 / np.sqrt(1 + (_FREQS / fh) ** 4)
    rir = None
    if rng.random() < c["reverb_p"]:                         # mild room
        rt60 = rng.uniform(0.1, 0.45)
        t = np.arange(int(rt60 * SR)) / SR
        rir = rng.normal(0, 1, len(t)) * np.exp(-6.9 * t / rt60)
        rir[0] = rng.uniform(3, 15) * np.sqrt(np.sum(rir ** 2))  # direct path dominates
        rir /= np.sqrt(np.sum(rir ** 2))
    return dict(eq=eq, rir=rir, noise=rng.choice(c["noises"]),
                snr=rng.uniform(*c["snr"]), level=rng.uniform(0.1, 0.9))


def _noise(kind, n, rng):
    """Background noise: white, pink (1/f power), or speech-shaped with a
    syllable-rate amplitude modulation (a crude distant babble)."""
    w = rng.normal(0, 1, n)
    if kind == "white":
        return w
    W = np.fft.rfft(w)
    f = np.fft.rfftfreq(n, 1 / SR)
    if kind == "pink":
        return np.fft.irfft(W / np.sqrt(np.maximum(f, 20)), n)
    x = np.fft.irfft(W * _bandpass(f, 500, 1500), n)
    return x * (1 + 0.8 * np.sin(2 * np.pi * rng.uniform(3, 6) * np.arange(n) / SR
                                 + rng.uniform(0, 6.3)))


def apply_channel(x, ch, rng):
    """Pass a clean waveform through a channel; the per-file SNR varies a little
    around the channel's mean. Returns float32 in [-1, 1]."""
    n = len(x)
    X = np.fft.rfft(x)
    X *= np.interp(np.fft.rfftfreq(n, 1 / SR), _FREQS, ch["eq"])
    y = np.fft.irfft(X, n)
    if ch["rir"] is not None:
        m = 1 << int(np.ceil(np.log2(n + len(ch["rir"]))))      # fast FFT size
        y = np.fft.irfft(np.fft.rfft(y, m) * np.fft.rfft(ch["rir"], m), m)[:n]
    # Speech power over the louder half of the frames, so pauses do not count.
    frames = np.sort(np.mean(y[: n // 256 * 256].reshape(-1, 256) ** 2, axis=1))
    p_speech = frames[len(frames) // 2:].mean() + 1e-12
    z = _noise(ch["noise"], n, rng)
    snr = ch["snr"] + rng.normal(0, 2)
    y = y + z * np.sqrt(p_speech / (np.mean(z ** 2) + 1e-12) / 10 ** (snr / 10))
    level = ch["level"] * np.exp(rng.normal(0, 0.1))
    return (np.clip(y / (np.abs(y).max() + 1e-9) * level, -1, 1)).astype(np.float32)


# ----------------------------------------------------------------------------
# the synthesizer

def _phone_tracks(spk, rng, T):
    """Frame-level control tracks for a random phone sequence of T frames:
    formant frequencies (T,5), voiced gain, aspiration gain, frication gain and
    the frication noise shape. Formants of unvoiced phones are interpolated
    from their neighbours, then everything is smoothed (coarticulation)."""
    F = np.full((T, 3), np.nan)
    vg, ag, ng = np.zeros(T), np.zeros(T), np.zeros(T)
    nc, nb = np.full(T, 4000.0), np.full(T, 3000.0)
    ms = lambda lo, hi: max(1, int(rng.uniform(lo, hi) * spk["rate"] / 8))  # ms -> frames
    formants = lambda f3: f3 * spk["scale"] * (1 + spk["formant_dev"])
    t = ms(40, 150)                                          # leading silence
    while t < T:
        if rng.random() < 0.08:                              # pause between words
            t += ms(100, 300)
            continue
        if rng.random() < 0.7:                               # onset consonant
            kind = rng.integers(4)
            d = ms(50, 120)
            if kind == 0:                                    # fricative
                c, b, g = FRICATIVES[rng.integers(len(FRICATIVES))]
                ng[t:t + d], nc[t:t + d], nb[t:t + d] = g, c * spk["scale"], b
            elif kind == 1:                                  # /h/: noise through the tract
                ag[t:t + d] = 0.15
            elif kind == 2:                                  # stop: closure then burst
                c, b, g = BURSTS[rng.integers(len(BURSTS))]
                d = ms(50, 90)
                (ng[t + d - 2:t + d], nc[t + d - 2:t + d],
                 nb[t + d - 2:t + d]) = g, c * spk["scale"], b
            else:                                            # nasal or liquid
                f1, f2, f3, g = SONORANTS[rng.integers(len(SONORANTS))]
                F[t:t + d], vg[t:t + d] = formants(np.array([f1, f2, f3])), g
            t += d
        v = rng.integers(len(VOWELS))                        # the vowel nucleus
        d = ms(80, 220)
        F[t:t + d] = formants(VOWELS[v]) * (1 + spk["vowel_dev"][v])
        vg[t:t + d] = rng.uniform(0.6, 1.0)                  # stress
        t += d
        if rng.random() < 0.3:                               # coda fricative
            c, b, g = FRICATIVES[rng.integers(len(FRICATIVES))]
            d = ms(60, 120)
            ng[t:t + d], nc[t:t + d], nb[t:t + d] = g, c * spk["scale"], b
            t += d
    ok = ~np.isnan(F[:, 0])
    if not ok.any():                                         # pathological: all silence
        F[:], ok[:] = formants(VOWELS[4]), True
    idx = np.arange(T)
    F = np.stack([np.interp(idx, idx[ok], F[ok, k]) for k in range(3)], 1)
    F = _smooth(F, 5)                                        # ~40 ms formant transitions
    F = np.concatenate([F, np.broadcast_to(spk["f45"], (T, 2))], 1)
    vg, ag, ng = (_smooth(x, 3) for x in (vg, ag, ng))
    return F, vg, ag, ng, nc, nb


def synthesize(spk, rng, seconds):
    """One clean utterance. Returns (wave float64 (n,), f0 per frame, voicing
    per frame); the last two let the vocoder attacks imitate the prosody."""
    n = int(seconds * SR)
    T = n // HOP + 1                                         # frames of a centred STFT
    F, vg, ag, ng, nc, nb = _phone_tracks(spk, rng, T)

    # F0 contour in semitones: declination + smooth random intonation + jitter.
    ft = np.arange(T)
    semis = np.linspace(1, -1, T) * rng.uniform(0.5, 2.0)
    accents = _smooth(rng.normal(0, 1, T + 30), 25)[15:15 + T]
    semis += accents / (accents.std() + 1e-9) * spk["f0_range"] / 2
    f0 = spk["f0"] * 2 ** (semis / 12) * (1 + spk["jitter"] * rng.normal(0, 1, T))

    # Rosenberg glottal flow by phase; its time derivative is the excitation
    # (the derivative also stands in for lip radiation).
    f0s = np.interp(np.arange(n) / HOP, ft, f0)
    phase = np.cumsum(f0s / SR)
    period, frac = np.floor(phase).astype(int), phase % 1.0
    tp, tn = 0.6 * spk["oq"], 0.4 * spk["oq"]
    flow = np.where(frac < tp, 0.5 * (1 - np.cos(np.pi * frac / tp)),
                    np.where(frac < tp + tn, np.cos(np.pi * (frac - tp) / (2 * tn)), 0.0))
    flow *= 1 + spk["shimmer"] * rng.normal(0, 1, period[-1] + 1)[period]
    src = np.diff(flow, prepend=0.0)
    src /= src.std() + 1e-12
    src += spk["breath"] * rng.normal(0, 1, n) * (0.3 + flow)  # pulsed aspiration
    noise = rng.normal(0, 1, n)

    # Spectral envelopes per frame: the formant cascade (T, bins) with the
    # source tilt, and the frication band-pass.
    f = _FREQS[None, :]
    tract = np.ones((T, len(_FREQS)))
    for k in range(5):
        Fk = F[:, k:k + 1]
        tract *= _resonance(f, Fk, spk["bw"] * (40 + 0.06 * Fk))
    tilt = (np.maximum(_FREQS, 100) / 500) ** (spk["tilt"] / 6.02)
    fric = _bandpass(f, nc[:, None], nb[:, None])
    V, N = _stft(src), _stft(noise)
    env_v = torch.from_numpy((tract * tilt * vg[:, None]).T)
    env_n = torch.from_numpy((tract * ag[:, None] + fric * ng[:, None]).T)
    y = _istft(V * env_v + N * env_n, n)
    return y / (np.abs(y).max() + 1e-9), f0, vg


# ----------------------------------------------------------------------------
# vocoder "attacks": resynthesize a clean utterance

def _excitation(f0, voiced, n, rng, cutoff=None):
    """Pulse train on a smoothed F0 (vocoders lack jitter) with noise in
    unvoiced frames; with `cutoff`, noise replaces pulses above that frequency."""
    f0s = np.interp(np.arange(n) / HOP, np.arange(len(f0)), _smooth(f0, 9))
    phase = np.cumsum(f0s / SR)
    pulses = np.diff(np.floor(phase), prepend=0.0) * np.sqrt(SR / f0s)
    v = np.interp(np.arange(n) / HOP, np.arange(len(voiced)), (voiced > 0.2).astype(float))
    noise = rng.normal(0, 1, n)
    if cutoff is None:
        return v * pulses + (1 - v) * noise
    P, N = np.fft.rfft(pulses), np.fft.rfft(noise)
    lo = np.fft.rfftfreq(n, 1 / SR) < cutoff
    mixed = np.fft.irfft(np.where(lo, P, N * np.sqrt(np.mean(pulses ** 2))), n)
    return v * mixed + (1 - v) * noise


def _oversmooth(S, width):
    """Moving average of log S (bins, frames) along time. Statistical TTS and
    VC models predict over-smoothed spectral trajectories (the "global
    variance" problem); this is the trace the attacks leave in common."""
    logs = torch.log(S + 1e-9).T.numpy()
    return torch.from_numpy(np.exp(_smooth(logs, width)).T)


def _match_energy(Y, X, width):
    """Give each resynthesized frame the (over-smoothed) energy of the original."""
    target = _oversmooth((X.abs() ** 2).sum(0, keepdim=True), width)[0]
    return Y * torch.sqrt(target / ((Y.abs() ** 2).sum(0) + 1e-12))


def _levinson(r, order):
    """LPC coefficients a (frames, order+1) from autocorrelations r, vectorized
    over frames (Levinson-Durbin recursion)."""
    a = np.zeros((r.shape[0], order + 1))
    a[:, 0] = 1.0
    err = r[:, 0].copy()
    for i in range(1, order + 1):
        acc = r[:, i] + np.sum(a[:, 1:i] * r[:, i - 1:0:-1], axis=1)
        k = -acc / err
        a[:, 1:i] = a[:, 1:i] + k[:, None] * a[:, i - 1:0:-1]
        a[:, i] = k
        err = err * (1 - k ** 2)
    return a


# Frames (8 ms each) of temporal over-smoothing per attack.
SMOOTHING = {"A01": 3, "A02": 5, "A03": 4, "A04": 5, "A05": 4}
_MEL = torchaudio.transforms.MelScale(80, SR, n_stft=N_FFT // 2 + 1)
_MEL_PINV = torch.linalg.pinv(_MEL.fb.T.double())           # (bins, mels)


def vocode(x, f0, voiced, attack, rng):
    """Copy-synthesis of clean speech x by one of the attack vocoders."""
    n = len(x)
    X = _stft(x)
    width = SMOOTHING[attack]
    if attack == "A01":                                      # mel + Griffin-Lim
        M = _oversmooth(_MEL.fb.T.double() @ (X.abs() ** 2), width)  # (80 mels, frames) power
        P = torch.clamp(_MEL_PINV @ M, min=0)                # back to linear power
        # Keyword arguments (torchaudio's griffinlim has no defaults). power=1.0: the input
        # is a magnitude, sqrt(P), not a power. 16 iterations with the fast-Griffin-Lim
        # momentum 0.99, from zero phase (rand_init=False keeps it deterministic); `length`
        # trims the output to the input's n samples.
        y = torchaudio.functional.griffinlim(
            torch.sqrt(P).float(), window=_WINDOW.float(), n_fft=N_FFT, hop_length=HOP,
            win_length=N_FFT, power=1.0, n_iter=16, momentum=0.99, length=n, rand_init=False)
        return y.double().numpy()
    if attack == "A02":                                      # LPC vocoder
        r = np.fft.irfft((X.abs() ** 2).T.numpy(), N_FFT, axis=1)[:, :19]
        r[:, 0] = r[:, 0] * (1 + 1e-3) + 1e-9                # lag-0 conditioning
        a = _levinson(r, 18)
        env = torch.from_numpy(1 / np.abs(np.fft.rfft(a, N_FFT, axis=1)).T)
        E = _stft(_excitation(f0, voiced, n, rng))
    elif attack in ("A04", "A05"):
        r = np.fft.irfft((X.abs() ** 2).T.numpy(), N_FFT, axis=1)[:, :19]
        r[:, 0] = r[:, 0] * (1 + 1e-3) + 1e-9
        env = 1 / np.abs(np.fft.rfft(_levinson(r, 18), N_FFT, axis=1))      # (frames, bins)
        E = _stft(_excitation(f0, voiced, n, rng))           # jitter-free pulses (noise unvoiced)
        E = E / (E.abs().pow(2).mean(0, keepdim=True).sqrt() + 1e-12)
        residual = X / torch.from_numpy(env.T)               # the bona fide source, whitened
        residual = residual / (residual.abs().pow(2).mean(0, keepdim=True).sqrt() + 1e-12)
        if attack == "A04":                                  # hybrid: vocoded above a cut-off
            hi = torch.from_numpy(_FREQS >= rng.uniform(300, 1500))[:, None]
            V = _match_energy(E * _oversmooth(torch.from_numpy(env.T), width), X, width)
            return _istft(torch.where(hi, V, X), n)
        rho = rng.uniform(0.3, 0.9)                          # A05: share of vocoder excitation
        coarse = 1 / np.abs(np.fft.rfft(_levinson(r, 10), N_FFT, axis=1))  # broader formants
        warp = rng.uniform(1.05, 1.12) ** rng.choice([-1, 1])             # longer or shorter tract
        warped = np.stack([np.interp(_FREQS / warp, _FREQS, e) for e in coarse])
        source = (1 - rho) * residual + rho * E
        Y = source * _oversmooth(torch.from_numpy(warped.T), width)
        return _istft(_match_energy(Y, X, 1), n)
    elif attack == "A03":                                    # cepstral, mixed excitation
        logmag = torch.log(X.abs() + 1e-6)
        c = torch.fft.irfft(logmag, N_FFT, dim=0)
        c[30:N_FFT - 29] = 0                                 # lifter: keep the envelope
        env = torch.exp(torch.fft.rfft(c, dim=0).real)
        E = _stft(_excitation(f0, voiced, n, rng, cutoff=rng.uniform(3000, 5000)))
    else:
        raise ValueError(f"unknown attack {attack}")
    return _istft(_match_energy(E * _oversmooth(env, width), X, width), n)


# ----------------------------------------------------------------------------
# transmission codecs (eval only): a condition train and dev never show

CODECS = ("narrowband", "transform")


def apply_codec(y, codec, rng):
    """A lossy transmission of a finished file y (float32, [-1, 1]).

    narrowband  telephony: resampled to 8 kHz and back (nothing above 4 kHz survives)
                and 8-bit mu-law quantization;
    transform   a crude perceptual codec: STFT bins more than 30 dB under the frame's
                peak are dropped and the rest quantized to 2-dB steps of magnitude,
                with a random 0-1 dB offset of the grid per file.
    """
    x = torch.from_numpy(np.asarray(y, dtype=np.float32))
    if codec == "narrowband":
        nb = torchaudio.functional.resample(x, SR, 8000)
        q = torchaudio.functional.mu_law_encoding(nb.clamp(-1, 1), 256)
        decoded = torchaudio.functional.mu_law_decoding(q, 256)
        out = torchaudio.functional.resample(decoded, 8000, SR)
        out = out[: len(x)].double().numpy()
    elif codec == "transform":
        X = _stft(x.double().numpy())
        db = 20 * torch.log10(X.abs() + 1e-9)
        keep = db > db.max(0, keepdim=True).values - 30
        offset = rng.uniform(0, 1)
        q = torch.round((db - offset) / 2) * 2 + offset
        out = _istft(torch.where(keep, 10 ** (q / 20) * X / (X.abs() + 1e-12), 0 * X), len(x))
    else:
        raise ValueError(f"unknown codec {codec}")
    return np.clip(out / (np.abs(out).max() + 1e-9) * np.abs(y).max(), -1, 1).astype(np.float32)


# ----------------------------------------------------------------------------
# corpus writers

def _video_id(rng):
    chars = np.array(list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"))
    return "".join(rng.choice(chars, 11))


def _atomic_build(root, params, build):
    """Run build(tmpdir) unless root already holds a complete corpus made with
    the same params. The corpus appears at root only once fully written."""
    root = os.path.abspath(root)
    want = dict(params, version=VERSION)
    marker = os.path.join(root, MARKER)
    if os.path.exists(marker):
        with open(marker) as fh:
            have = json.load(fh)
        if {k: have.get(k) for k in want} == want:
            return have
        shutil.rmtree(root)                                  # ours, but stale: rebuild
    elif os.path.exists(root) and os.listdir(root):
        raise RuntimeError(f"{root} exists but holds no complete toy corpus ({MARKER} missing); "
                           "delete it or choose another cache folder")
    parent = os.path.dirname(root)
    os.makedirs(parent, exist_ok=True)
    base = os.path.basename(root)
    for d in os.listdir(parent):                             # leftovers of killed runs
        if d.startswith(f".{base}.tmp-"):
            pid = int(d.rsplit("-", 1)[1])
            try:
                os.kill(pid, 0)                              # still alive: leave it alone
            except (ProcessLookupError, PermissionError):
                shutil.rmtree(os.path.join(parent, d), ignore_errors=True)
    tmp = os.path.join(parent, f".{base}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    t0 = time.time()
    print(f"generating toy corpus into {root} ...", flush=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)         # tiny FFTs: threads only add overhead/contention
    try:
        with torch.inference_mode():
            counts = build(tmp)
    except BaseException:                                    # interrupted: leave nothing behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        torch.set_num_threads(threads)
    info = dict(want, counts=counts, seconds=round(time.time() - t0, 1))
    with open(os.path.join(tmp, MARKER), "w") as fh:
        json.dump(info, fh, indent=1)
    if os.path.exists(root) and not os.listdir(root):
        os.rmdir(root)
    try:
        os.rename(tmp, root)
    except OSError:                                          # another process won the race
        shutil.rmtree(tmp, ignore_errors=True)
        if not os.path.exists(marker):
            raise
    print(f"toy corpus ready in {info['seconds']} s: {counts}", flush=True)
    return info


def sv_session(seed, role, i, s):
    """Session s of SV speaker i (role "train" or "test") -> (video id, speaker state,
    channel). Each piece has its own random stream, keyed by its indices: any file can
    be made alone, in any order, and comes out the same (sv_file)."""
    r = 0 if role == "train" else 1
    spk = make_speaker(np.random.default_rng([seed, 1, r, i]))
    rng = np.random.default_rng([seed, 2, r, i, s])
    return _video_id(rng), session_state(spk, rng), make_channel(rng)


def sv_file(seed, cfg, role, i, s, u, session=None):
    """Utterance u of sv_session(seed, role, i, s) -> float samples in [-1, 1]."""
    _, state, chan = session or sv_session(seed, role, i, s)
    urng = np.random.default_rng([seed, 3, 0 if role == "train" else 1, i, s, u])
    wave, _, _ = synthesize(state, urng, urng.uniform(*cfg["dur"]))
    return apply_channel(wave, chan, urng)


def make_toy_sv(root, seed=0, size="default"):
    """Write a VoxCeleb1-style SV corpus to root: wav/idXXXXX/<video>/NNNNN.wav
    and veri_test2.txt ("label enroll test"), test speakers disjoint from the
    training speakers, target trials across different sessions, balanced."""
    cfg = SIZES["sv"][size]

    def build(tmp):
        n_files = 0
        test_utts = {}                                       # speaker -> [(session, rel path)]
        groups = [("train", i, f"id{10001 + i}") for i in range(cfg["train_spk"])]
        groups += [("test", i, f"id{10270 + i}") for i in range(cfg["test_spk"])]
        for role, i, spk_id in groups:
            for s in range(cfg[f"{role}_sess"]):
                session = sv_session(seed, role, i, s)
                for u in range(cfg[f"{role}_utt"]):
                    rel = f"{spk_id}/{session[0]}/{u + 1:05d}.wav"
                    os.makedirs(os.path.join(tmp, "wav", spk_id, session[0]), exist_ok=True)
                    sf.write(os.path.join(tmp, "wav", rel),
                             sv_file(seed, cfg, role, i, s, u, session), SR, subtype="PCM_16")
                    n_files += 1
                    if role == "test":
                        test_utts.setdefault(spk_id, []).append((s, rel))
        # Balanced trials: targets are cross-session pairs, non-targets pairs of
        # different test speakers; both drawn without repetition.
        rng = np.random.default_rng([seed, 4])
        tgt = [(a, b) for utts in test_utts.values() for x, (sa, a) in enumerate(utts)
               for (sb, b) in utts[x + 1:] if sa != sb]
        allu = [(spk, rel) for spk, utts in test_utts.items() for _, rel in utts]
        non = [(a, b) for x, (sa, a) in enumerate(allu) for (sb, b) in allu[x + 1:] if sa != sb]
        half = min(cfg["trials"] // 2, len(tgt), len(non))
        pick_t = rng.choice(len(tgt), half, replace=False)
        pick_n = rng.choice(len(non), half, replace=False)
        trials = [(1, *tgt[j]) for j in pick_t] + [(0, *non[j]) for j in pick_n]
        order = rng.permutation(len(trials))
        with open(os.path.join(tmp, "veri_test2.txt"), "w") as fh:
            fh.writelines(f"{trials[j][0]} {trials[j][1]} {trials[j][2]}\n" for j in order)
        return dict(files=n_files, train_speakers=cfg["train_spk"],
                    test_speakers=cfg["test_spk"], trials=len(trials))

    return _atomic_build(root, dict(kind="sv", seed=seed, size=size), build)


def make_toy_unlabelled(root, seed=0, size="default"):
    """Write unlabelled speech for pre-training (pretrain.py): wav/uNNNNN/<video>/NNNNN.wav,
    many more voices than the labelled sets. The speakers come from their own random
    streams (role 21-23 here; SV uses 1-4, CM 11-13), so they are new voices, not the SV
    or CM speakers under another name: pre-training sees none of the test speakers.
    Sessions pass through the same kind of random channels as the SV corpus."""
    cfg = SIZES["unlabelled"][size]

    def build(tmp):
        n_files = 0
        for i in range(cfg["speakers"]):
            spk = make_speaker(np.random.default_rng([seed, 21, i]))
            for s in range(cfg["sessions"]):
                rng = np.random.default_rng([seed, 22, i, s])
                video, state, chan = _video_id(rng), session_state(spk, rng), make_channel(rng)
                folder = os.path.join(tmp, "wav", f"u{i:05d}", video)
                os.makedirs(folder, exist_ok=True)
                for u in range(cfg["utts"]):
                    urng = np.random.default_rng([seed, 23, i, s, u])
                    wave, _, _ = synthesize(state, urng, urng.uniform(*cfg["dur"]))
                    sf.write(os.path.join(folder, f"{u + 1:05d}.wav"),
                             apply_channel(wave, chan, urng), SR, subtype="PCM_16")
                    n_files += 1
        return dict(files=n_files, speakers=cfg["speakers"])

    return _atomic_build(root, dict(kind="unlabelled", seed=seed, size=size), build)


CM_SPLITS = {"train": ("T", "flac_T", "ASVspoof5.train.tsv"),
             "dev": ("D", "flac_D", "ASVspoof5.dev.track_1.tsv"),
             "eval": ("E", "flac_E_eval", "ASVspoof5.eval.track_1.tsv")}
ATTACK_TAGS = {"A01": "AC1", "A02": "AC2", "A03": "AC3", "A04": "AC4", "A05": "AC5"}


def cm_jobs(seed, cfg, r, split):
    """The files of CM split number r, in file order -> [(job index j, speaker index,
    attack or "bonafide")]: bona fide files per speaker, then the spoofs spread over the
    speakers, shuffled."""
    n_spk, n_bona, attacks = cfg[split]
    jobs = [(i, "bonafide") for i in range(n_spk) for _ in range(n_bona)]
    jobs += [(j % n_spk, a) for a, k in attacks.items() for j in range(k)]
    order = np.random.default_rng([seed, 12, r]).permutation(len(jobs))
    return [(int(j), *jobs[j]) for j in order]


def cm_file(seed, cfg, r, split, j, i, attack, speaker=None):
    """Job j of split number r (speaker i, the attack) -> (float samples, codec or "-").
    Its own random stream, keyed by (r, j): any file can be made alone (cm_jobs)."""
    rng = np.random.default_rng([seed, 13, r, j])
    spk = session_state(speaker or make_speaker(np.random.default_rng([seed, 11, r, i])), rng)
    wave, f0, vg = synthesize(spk, rng, rng.uniform(*cfg["dur"]))
    if attack != "bonafide":
        wave = vocode(wave, f0, vg, attack, rng)
        wave = wave / (np.abs(wave).max() + 1e-9)
    y = apply_channel(wave, make_channel(rng, "cm"), rng)
    codec = "-"
    if split == "eval" and rng.random() < cfg["eval_codec_p"]:
        codec = CODECS[rng.integers(len(CODECS))]
        y = apply_codec(y, codec, rng)
    return y, codec


def make_toy_cm(root, seed=0, size="default"):
    """Write an ASVspoof5-style CM corpus to root: flac_T/, flac_D/,
    flac_E_eval/ and the three ASVspoof5.*.tsv protocols (10 columns).
    Speakers are disjoint across splits; attacks A03 and A05 and the codecs appear
    only in eval (the codec is named in the protocol's CODEC column)."""
    cfg = SIZES["cm"][size]

    def build(tmp):
        counts = {}
        for r, (split, (prefix, folder, proto)) in enumerate(CM_SPLITS.items()):
            os.makedirs(os.path.join(tmp, folder))
            spks = [make_speaker(np.random.default_rng([seed, 11, r, i]))
                    for i in range(cfg[split][0])]
            lines = []
            for num, (j, i, attack) in enumerate(cm_jobs(seed, cfg, r, split)):
                y, codec = cm_file(seed, cfg, r, split, j, i, attack, spks[i])
                fid = f"{prefix}_{num:010d}"
                sf.write(os.path.join(tmp, folder, fid + ".flac"), y, SR, subtype="PCM_16")
                key = "bonafide" if attack == "bonafide" else "spoof"
                tag = "-" if key == "bonafide" else ATTACK_TAGS[attack]
                lines.append(f"{prefix}_{i:04d} {fid} {spks[i]['gender']} {codec} - - "
                             f"{tag} {attack} {key} -\n")
            with open(os.path.join(tmp, proto), "w") as fh:
                fh.writelines(lines)
            counts[split] = len(lines)
        return counts

    return _atomic_build(root, dict(kind="cm", seed=seed, size=size), build)


if __name__ == "__main__":
    # Measure generation time: python toy_corpus.py OUT_DIR [seed] [size]
    import sys
    out = sys.argv[1]
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    size = sys.argv[3] if len(sys.argv) > 3 else "default"
    for name, fn in (("toy_sv", make_toy_sv), ("toy_cm", make_toy_cm)):
        t0 = time.time()
        fn(os.path.join(out, f"{name}_seed{seed}_{size}"), seed, size)
        print(f"{name}: {time.time() - t0:.1f} s")
