"""
Data augmentation for speaker verification training: MUSAN additive noise (noise,
music, babble) and room-impulse-response reverberation, applied to a training crop
with probability p, one kind at a time, as in the Kaldi and wespeaker SV recipes that
Peng et al. 2025 ("Hybrid Pruning", arXiv 2508.16232, Sec. 3) follow (p = 0.6).

Two places can do the reverb's convolution, with the same result to float rounding:
- in the loader worker, per crop (Augmenter.__call__: numpy FFTs on the CPU);
- on the training device, per batch (Augmenter.split in the worker, then reverberate
  on the GPU; train.py --reverb-on). docs/performance.md measures both.

Every random draw comes from the numpy Generator of the crop (data.TrainCrops), so an
augmented example is as reproducible as the crop itself.
"""

import math
import os

import numpy as np
import torch

from data import need_dir, list_audio_files, load_audio, read_random_window


def _power(x):
    """Mean square of a float32 numpy vector, as a Python float. einsum makes no
    temporary and, unlike np.dot, calls no BLAS library, whose own thread pool has no
    place in a one-thread DataLoader worker."""
    return float(np.einsum("i,i->", x, x)) / max(len(x), 1)


def _fft_len(n):
    """The smallest 2^a 3^b 5^c >= n. An FFT's time depends on its length's prime
    factors, not just its size: a crop plus a RIR, 48000 + 8000 - 1 = 55999 =
    29 x 1931, takes 10-20x longer than 56250 = 2 x 3^2 x 5^5, and in numpy 56250
    is as fast as or faster than the next power of two, 65536 (bench_loader.py,
    section 2, times them all)."""
    best = 1 << (n - 1).bit_length()            # a power of two always qualifies
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


class Augmenter:
    """MUSAN additive noise and RIR reverberation, as in the SV recipes
    (Kaldi/wespeaker style): with probability p, one of the available kinds.

    musan_dir  MUSAN root with noise/, speech/ and music/ sub-folders.
    rir_dir    a folder of room impulse responses (e.g. RIRS_NOISES/simulated_rirs).
    All randomness comes from the numpy Generator passed to __call__, so a
    crop's augmentation is as reproducible as the crop itself.

    Noise, music and babble read only the window they mix in (read_random_window).
    RIRs are read once per process and kept, up to RIR_CACHE_SAMPLES: DataLoader
    workers get copies of the object and each fills its own cache (the parent's stays
    empty unless it augments crops itself). split() stops short of the reverb's
    convolution, for a GPU to do in a batch (TrainCrops' reverb_later, reverberate).
    """
    SNR = {"noise": (0, 15), "speech": (13, 20), "music": (5, 15)}   # dB, Kaldi's ranges
    BABBLE = (3, 7)                                                  # speakers summed for "speech"
    # RIRs kept in memory per process, in samples: 32M float32 = 128 MB, all of 4,000
    # 0.5-s RIRs; RIRS_NOISES' 60,000 simulated RIRs would take GBs in every worker,
    # so past this the rest are read from disk each time (one small file read).
    RIR_CACHE_SAMPLES = 32 * 2 ** 20

    def __init__(self, musan_dir=None, rir_dir=None, p=0.6):
        self.p, self.noises, self.rirs = p, {}, []
        if musan_dir:
            need_dir(musan_dir, "MUSAN with noise/, speech/ and music/ sub-folders")
            for kind in self.SNR:
                files = list_audio_files(os.path.join(musan_dir, kind))
                if files:
                    self.noises[kind] = files
            if not self.noises:
                raise FileNotFoundError(f"no .wav under {musan_dir}/{{noise,speech,music}}")
        if rir_dir:
            need_dir(rir_dir, "room impulse responses as .wav files")
            self.rirs = list_audio_files(rir_dir)
            if not self.rirs:
                raise FileNotFoundError(f"no .wav under {rir_dir}")
        self.kinds = list(self.noises) + (["reverb"] if self.rirs else [])
        self._rir_cache, self._rir_cached = {}, 0      # path -> RIR (L,); samples kept

    def __call__(self, wave, rng):
        """wave (S,) -> augmented wave (S,); split() then, for a RIR, reverb()."""
        wave, rir = self.split(wave, rng)
        return wave if rir is None else self._convolve(wave, rir)

    def split(self, wave, rng):
        """wave (S,) -> (wave with any noise mixed in (S,), aligned unit-norm RIR (L,) or
        None): everything but the reverb's convolution, which a GPU does faster in a batch
        (reverberate). The draws from rng, in this order (a test replays them; another
        order would change every augmented example of a run):
            rng.random()                     augment at all? (< p)
            rng.integers(len(kinds))         the kind
          reverb:
            rng.integers(len(rirs))          the RIR
          noise / music / speech (babble):
            rng.integers(BABBLE[0], BABBLE[1] + 1)   speakers summed, "speech" only
            per source: rng.integers(len(files))     the file,
                        one rng.integers             its window start (read_random_window)
            rng.uniform(*SNR[kind])          the SNR in dB
        """
        if not self.kinds or rng.random() >= self.p:
            return wave, None
        kind = self.kinds[rng.integers(len(self.kinds))]
        if kind == "reverb":
            return wave, self._rir(self.rirs[rng.integers(len(self.rirs))])
        files = self.noises[kind]
        count = int(rng.integers(self.BABBLE[0], self.BABBLE[1] + 1)) if kind == "speech" else 1
        noise = sum(read_random_window(files[rng.integers(len(files))], len(wave), rng).numpy()
                    for _ in range(count))                                      # (S,)
        snr = rng.uniform(*self.SNR[kind])
        # In numpy, with the powers as Python floats: a handful of torch ops on 0-d
        # tensors cost more than the arithmetic here (2-3x the whole mix).
        w = wave.numpy()
        p_s, p_n = _power(w) + 1e-8, _power(noise) + 1e-8
        mixed = w + noise * np.float32(math.sqrt(p_s / (p_n * 10 ** (snr / 10))))
        return torch.from_numpy(mixed), None

    def _rir(self, path):
        """The RIR of a file, aligned and unit-norm (aligned_rir), kept while it fits."""
        rir = self._rir_cache.get(path)
        if rir is None:
            rir = self.aligned_rir(load_audio(path))
            if self._rir_cached + len(rir) <= self.RIR_CACHE_SAMPLES:
                self._rir_cache[path] = rir
                self._rir_cached += len(rir)
        return rir

    @staticmethod
    def aligned_rir(rir):
        """rir (L,) -> (L',) from its direct path (the largest sample) on, with unit
        energy: the convolution then does not delay the speech."""
        r = rir.numpy()
        r = r[int(np.abs(r).argmax()):]
        return torch.from_numpy(r / np.float32(np.linalg.norm(r) + 1e-8))

    @classmethod
    def reverb(cls, wave, rir):
        """Convolve with a RIR aligned on its direct path (so the speech is not
        delayed), and keep the original power. wave (S,), rir (L,) -> (S,)."""
        return cls._convolve(wave, cls.aligned_rir(rir))

    @staticmethod
    def _convolve(wave, rir):
        """wave (S,) * aligned rir (L,) -> the first S samples, at the power of wave."""
        w, r = wave.numpy(), rir.numpy()
        n = _fft_len(len(w) + len(r) - 1)          # no wrap-around into the first S samples
        # numpy's FFT (pocketfft), not torch's: 2x faster on one core for one 1-D real
        # transform of this size (bench_loader.py, section 2).
        y = np.fft.irfft(np.fft.rfft(w, n) * np.fft.rfft(r, n), n)[:len(w)]     # (S,)
        y = y.astype(np.float32, copy=False)
        return torch.from_numpy(y * np.float32(math.sqrt(_power(w) / (_power(y) + 1e-8))))


def reverberate(waves, rirs, rir_lengths):
    """Augmenter's reverb for a batch, on the batch's device: waves (B, S) crops, rirs
    (B, L) aligned unit-norm RIRs zero-padded to the longest (collate_pad), rir_lengths
    (B,), 0 where a crop has none (it passes unchanged) -> (B, S).

    The same convolution as Augmenter._convolve, as batched FFTs: trailing zeros of a
    padded RIR add nothing, and any FFT length >= S + L - 1 gives the same first S
    samples. On a GPU the batch costs next to nothing; in a loader worker the three FFTs
    of one crop were most of an augmented crop's time (bench_loader.py)."""
    S = waves.shape[1]
    n = _fft_len(S + rirs.shape[1] - 1)
    y = torch.fft.irfft(torch.fft.rfft(waves, n) * torch.fft.rfft(rirs, n), n)[:, :S]  # (B, S)
    gain = torch.sqrt(waves.pow(2).mean(1, keepdim=True) / (y.pow(2).mean(1, keepdim=True) + 1e-8))
    return torch.where((rir_lengths > 0)[:, None], y * gain, waves)
