"""
Benchmark of the training data loader and the evaluation pipeline (issue 20): how many
augmented 3-s crops one data-loading worker makes per second, how many workers one GPU
therefore needs, and what scoring VoxCeleb1-E/H costs. Prints tables; it is not a test.

    python benchmarks/bench_loader.py                # about 3 min on a 2-core CPU
    python benchmarks/bench_loader.py --quick        # smoke test, tiny sizes, ~20 s
    python benchmarks/bench_loader.py --gpu-step-seconds 0.09 --gpu-step-batch 32
                                                     # a measured step time instead
    python benchmarks/bench_loader.py --cache DIR    # keep the synthetic corpus for reruns

The corpus is synthetic, written once with soundfile as 16-kHz 16-bit PCM .wav (what
VoxCeleb2's .m4a converts to, see data.py; MUSAN and RIRS_NOISES ship as such .wav):
  - training set (VoxCeleb2-dev-shaped): 400 utterances of 100 speakers, each 4 s plus
    an exponential of mean 4 s, cut at 20 s (mean about 7.9 s; VoxCeleb2-dev: >= 4 s,
    mean 7.8 s);
  - MUSAN-shaped: noise/ 40 files of 10 s, music/ 6 files of 180 s, speech/ 10 files of
    120 s; RIRs: 100 files of 0.5 s (an exponentially decaying noise tail);
  - the samples are white noise: decoding PCM costs the same whatever the content.
The files sit in the page cache after writing: the figures are the CPU cost of loading,
not disk or network latency (which more workers, or more prefetching, would hide).

1. Crops/s per worker: a loop over TrainCrops.__getitem__ in this process (one thread,
   as in a DataLoader worker), batch of crops per timing, no augmentation / the SV
   recipe's p = 0.6 / p = 1, and each kind alone at p = 1. "before" is the code before
   issue 20, kept here as OldTrainCrops / OldAugmenter (same random draws, so the same
   crops): it read every noise, music and babble file whole and cut the window with
   _fit, read the crop's header and window in two opens through libsndfile's float
   conversion, read the RIR for every crop, and ran the reverb's FFT in torch at the
   exact length len(crop) + len(RIR) - 1. "after" is data.py with augment.py; a last line times it with
   the reverb left to the training device (TrainCrops(reverb_later=True), train.py's
   default on a GPU), beside unaugmented crops. Both run the same crops,
   interleaved (common.time_interleaved), so background load hits both alike. In this
   long-lived process the reverb costs more than in a fresh DataLoader worker (glibc
   hands the FFTs' freed scratch memory back to the OS here, and page-faults it in
   again on the next crop), so section 3, the way training runs, is the figure to use.
2. The reverb's convolution alone (one 3-s crop, one 0.5-s RIR): FFT lengths and
   libraries, to show why augment.Augmenter.reverb uses numpy at augment._fft_len.
3. DataLoader throughput: whole batches of --batch-size 3-s crops (128 = the SV recipe,
   per process) through collate_pad, no augmentation, p = 0.6, and p = 0.6 with the reverb
   left to the training device, for 1 .. --max-workers
   workers (default: the core count). The first batch (worker start-up) is not timed.
4. Workers per GPU: the crops/s one GPU consumes, from a measured step time
   (--gpu-step-seconds at --gpu-step-batch crops: gpu_check.py's "train step bf16, ours,
   gated" row gives ms/step at batch 32) or else estimated on paper: the MACs of WavLM
   Base+ on one 3-s crop (common.macs) x 2 FLOPs per MAC x 3 (forward + backward, which
   costs about twice the forward) / the GPU's rate, by default an H100 at 40% of its
   989 dense bf16 TFLOP/s (--gpu-tflops, --gpu-utilization). The MHFA head and the loss
   add under 1%. Divided by what one worker makes (section 3, one worker, p = 0.6).
5. Evaluation at VoxCeleb1-E/H scale (145,000 utterances, 580,000 trials): embedding
   one 8-s utterance (WavLM Base+ with random weights + the MHFA head, batch 1, one
   thread, inference mode), times 145k; the same on a GPU from MACs at the rate of 4.;
   and AS-norm scoring (scoring.as_norm) of 580k trials among 145k random 256-dim
   embeddings against a cohort of 5,994 speaker means (VoxCeleb2-dev's speakers), top 300.
"""

import argparse
import math
import os
import resource
import shutil
import statistics
import tempfile
import time

import numpy as np
import soundfile as sf
import torch

from common import machine_header, macs, time_interleaved  # puts the root on sys.path
import augment  # noqa: E402
import classifier  # noqa: E402
import data  # noqa: E402
import scoring  # noqa: E402
from wavlm_masked import MaskedWavLM, WavLMConfig  # noqa: E402

SR = data.SAMPLE_RATE
CROP_SECONDS = 3.0
RECIPE_P = 0.6                # the SV recipe's --aug-prob (recipes.py)
H100_BF16_TFLOPS = 989.0      # H100 SXM dense bf16 peak (NVIDIA's data sheet, no sparsity)

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--quick", action="store_true",
                    help="tiny corpus and sizes, one repetition: a smoke test, not figures")
parser.add_argument("--threads", type=int, default=1,
                    help="torch.set_num_threads (default 1, as in a DataLoader worker)")
parser.add_argument("--cache", default=None,
                    help="folder for the synthetic corpus, kept between runs "
                         "(default: a temporary folder, deleted at the end)")
parser.add_argument("--batch-size", type=int, default=128, help="crops per batch (section 3)")
parser.add_argument("--max-workers", type=int, default=os.cpu_count(),
                    help="DataLoader workers up to this many (section 3)")
parser.add_argument("--gpu-step-seconds", type=float, default=None,
                    help="a measured training step time, replacing the estimate from MACs "
                         "(section 4)")
parser.add_argument("--gpu-step-batch", type=int, default=None,
                    help="crops in that measured step (default --batch-size)")
parser.add_argument("--gpu-tflops", type=float, default=H100_BF16_TFLOPS,
                    help="the GPU's dense bf16 peak, TFLOP/s (default: H100 SXM)")
parser.add_argument("--gpu-utilization", type=float, default=0.40,
                    help="share of the peak a training step reaches (default 0.40)")
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()
Q = args.quick


# ------------------------------------------------------------------ synthetic corpus
def write_corpus(root, seed):
    """The tree described in the docstring (smaller with --quick). Returns (training
    items [(path, speaker)], musan folder, rir folder, seconds of audio, MUSAN sizes)."""
    rng = np.random.default_rng(seed)
    total = 0.0

    def wav(path, seconds, decay=None):
        nonlocal total
        os.makedirs(os.path.dirname(path), exist_ok=True)
        x = 0.1 * rng.standard_normal(int(seconds * SR))
        if decay is not None:                         # a RIR: a decaying tail
            x *= np.exp(-np.arange(len(x)) / (decay * SR))
        sf.write(path, x.astype(np.float32), SR, subtype="PCM_16")
        total += seconds

    n_utt, n_spk = (40, 10) if Q else (400, 100)
    items = []
    for u in range(n_utt):
        path = os.path.join(root, "vox2", "dev", "wav", f"id{u % n_spk:05d}", f"v{u}", "00001.wav")
        wav(path, min(20.0, 4.0 + rng.exponential(4.0)))
        items.append((path, u % n_spk))
    sizes = {"noise": (40, 10.0), "music": (6, 180.0), "speech": (10, 120.0)}
    if Q:
        sizes = {"noise": (4, 10.0), "music": (2, 30.0), "speech": (6, 20.0)}
    for kind, (count, seconds) in sizes.items():
        for k in range(count):
            wav(os.path.join(root, "musan", kind, f"{kind}-{k:04d}.wav"), seconds)
    for k in range(10 if Q else 100):
        wav(os.path.join(root, "rirs", f"rir-{k:04d}.wav"), 0.5, decay=0.08)
    return items, os.path.join(root, "musan"), os.path.join(root, "rirs"), total, sizes


# ------------------------------------------------------- the code before issue 20
def old_read(path, start=0, stop=None):
    """Before: soundfile's float32 read, then the channel mean."""
    x, sr = sf.read(path, start=start, stop=stop, dtype="float32", always_2d=True)
    return torch.from_numpy(x.mean(axis=1)), sr


class OldTrainCrops(data.TrainCrops):
    """TrainCrops.__getitem__ before: header and window in two opens."""

    def __getitem__(self, i):
        path, label = self.items[i]
        rng = np.random.default_rng([self.seed, self.epoch, i])
        info = sf.info(path)
        if info.samplerate == SR and info.frames > self.n:
            start = int(rng.integers(0, info.frames - self.n + 1))
            wave = old_read(path, start, start + self.n)[0]
        else:
            wave = data._fit(old_read(path)[0], self.n, rng)
        if self.augment is not None:
            wave = self.augment(wave, rng)
        return wave, label


class OldAugmenter(augment.Augmenter):
    """Augmenter.__call__ before: whole files, a RIR read per crop, the reverb's FFT in
    torch at the exact length. The same draws in the same order as augment.Augmenter."""

    def __call__(self, wave, rng):
        if not self.kinds or rng.random() >= self.p:
            return wave
        kind = self.kinds[rng.integers(len(self.kinds))]
        if kind == "reverb":
            rir = old_read(self.rirs[rng.integers(len(self.rirs))])[0]
            rir = rir[int(rir.abs().argmax()):]
            rir = rir / (rir.norm() + 1e-8)
            n = len(wave) + len(rir) - 1
            y = torch.fft.irfft(torch.fft.rfft(wave, n) * torch.fft.rfft(rir, n), n)[:len(wave)]
            return y * (wave.pow(2).mean() / (y.pow(2).mean() + 1e-8)).sqrt()
        files = self.noises[kind]
        count = int(rng.integers(self.BABBLE[0], self.BABBLE[1] + 1)) if kind == "speech" else 1
        noise = sum(data._fit(old_read(files[rng.integers(len(files))])[0], len(wave), rng)
                    for _ in range(count))
        snr = rng.uniform(*self.SNR[kind])
        p_s, p_n = wave.pow(2).mean() + 1e-8, noise.pow(2).mean() + 1e-8
        return wave + noise * torch.sqrt(p_s / (p_n * 10 ** (snr / 10)))


# ----------------------------------------------------------------------- helpers
def crop_loop(ds, count, epochs):
    """A function that makes `count` crops of the next epoch each call: every call (and
    so every repetition) draws new crops, and the before/after pair of one round the same."""
    def run():
        ds.set_epoch(next(epochs))
        for i in range(count):
            ds[i % len(ds)]
    return run


def sub_augmenter(cls, musan, rirs, p, kinds=None):
    aug = cls(musan, rirs, p=p)
    if kinds is not None:
        aug.kinds = list(kinds)           # this kind alone
    return aug


def fmt_rate(x):
    return f"{x:,.0f}" if x >= 100 else f"{x:,.1f}"


def loader_rate(ds, workers, batch_size, batches, seed):
    """(crops/s of whole batches through a DataLoader after its first batch, wall time;
    crops per CPU-second of the workers, all batches and their start-up included).
    The workers' CPU time is read from the OS once they have exited: it counts only
    their own work, so it holds on a busy machine where wall time does not."""
    order = data.epoch_batches(len(ds), batch_size, 0, seed)[:batches + 1]
    loader = torch.utils.data.DataLoader(ds, batch_sampler=order, num_workers=workers,
                                         collate_fn=data.collate_pad)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    it = iter(loader)
    first = next(it)[0].shape[0]                       # worker start-up, not timed
    t0, n = time.perf_counter(), 0
    for waves, *_ in it:
        n += waves.shape[0]
    wall = n / (time.perf_counter() - t0)
    del it                                             # exhausted: the workers have exited
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return wall, (n + first) / cpu


# --------------------------------------------------------------------------- main
def main():
    torch.set_num_threads(args.threads)
    print(machine_header(f"bench_loader: {'QUICK (smoke test, not figures)' if Q else 'full'} "
                         f"run, torch threads {args.threads}"))
    root = args.cache or tempfile.mkdtemp(prefix="bench_loader_")
    t0 = time.perf_counter()
    items, musan, rirs, total, sizes = write_corpus(os.path.join(root, "corpus"), args.seed)
    print(f"\ncorpus  : {len(items)} training utterances, mean "
          f"{statistics.mean(sf.info(p).duration for p, _ in items):.1f} s; MUSAN-like "
          + ", ".join(f"{kind} {c} x {s:g} s" for kind, (c, s) in sizes.items())
          + f"; {len(data.list_audio_files(rirs))} RIRs x 0.5 s; 16-kHz 16-bit wav, "
          f"{total / 3600:.2f} h written in {time.perf_counter() - t0:.1f} s")
    try:
        rates = per_worker(items, musan, rirs)
        reverb_fft()
        loader = dataloader(items, musan, rirs)
        workers_per_gpu(rates, loader)
        evaluation()
    finally:
        if not args.cache:
            shutil.rmtree(root, ignore_errors=True)
    print("=" * 78)


def per_worker(items, musan, rirs):
    reps, fast, slow = (1, 16, 4) if Q else (3, 256, 24)
    print(f"\n[1] Crops/s per worker: {CROP_SECONDS:g}-s crops, TrainCrops.__getitem__ in "
          f"this process; {fast} crops per timing after, {slow} before (augmented); "
          f"{reps} interleaved rounds, median; new crops every round")
    configs = [("no augmentation", None, None), (f"p = {RECIPE_P} (SV recipe)", RECIPE_P, None),
               ("p = 1.0", 1.0, None), ("noise alone, p = 1", 1.0, ["noise"]),
               ("music alone, p = 1", 1.0, ["music"]), ("babble alone, p = 1", 1.0, ["speech"]),
               ("reverb alone, p = 1", 1.0, ["reverb"])]
    print(f"    {'crops/s':<24}{'------- wall -------':>27}{'----- CPU time -----':>27}")
    print(f"    {'':<24}{'before':>9}{'after':>9}{'ratio':>9}{'before':>9}{'after':>9}"
          f"{'ratio':>9}   same crops? max |after - before|")
    rates = {}
    for name, p, kinds in configs:
        new = data.TrainCrops(items, CROP_SECONDS, seed=args.seed, augment=(
            None if p is None else sub_augmenter(augment.Augmenter, musan, rirs, p, kinds)))
        old = OldTrainCrops(items, CROP_SECONDS, seed=args.seed, augment=(
            None if p is None else sub_augmenter(OldAugmenter, musan, rirs, p, kinds)))
        k_old = fast if p is None else slow
        # the two implementations on the same crops: the reverb's FFT rounds differently
        diff = max((new[i][0] - old[i][0]).abs().max().item() for i in range(min(8, len(items))))
        e = iter(range(1, 10 ** 6))      # both sides see epochs 1, 2, ... in step
        e2 = iter(range(1, 10 ** 6))
        wall, cpu = time_interleaved({"before": crop_loop(old, k_old, e),
                                      "after": crop_loop(new, fast, e2)}, 0, reps)
        r_old = k_old / statistics.median(wall["before"])
        r_new = fast / statistics.median(wall["after"])
        c_old = k_old / statistics.median(cpu["before"])
        c_new = fast / statistics.median(cpu["after"])
        rates[name] = (r_old, r_new, c_old, c_new)
        print(f"    {name:<24}{fmt_rate(r_old):>9}{fmt_rate(r_new):>9}{r_new / r_old:>8.1f}x"
              f"{fmt_rate(c_old):>9}{fmt_rate(c_new):>9}{c_new / c_old:>8.1f}x   {diff:.1e}")
    base, recipe = rates["no augmentation"], rates[f"p = {RECIPE_P} (SV recipe)"]
    print(f"    p = {RECIPE_P} / no augmentation, wall (CPU time): before "
          f"{recipe[0] / base[0]:.2f} ({recipe[2] / base[2]:.2f}), after {recipe[1] / base[1]:.2f} "
          f"({recipe[3] / base[3]:.2f})   (goal: after >= 0.5)")
    print(f"    after with p = {RECIPE_P} / before without augmentation: "
          f"{recipe[1] / base[0]:.2f} ({recipe[3] / base[2]:.2f})")
    # The reverb left to the training device (train.py --reverb-on device, the default on
    # a GPU): the worker returns the crop and its RIR; no "before" exists for this.
    plain = data.TrainCrops(items, CROP_SECONDS, seed=args.seed)
    later = data.TrainCrops(items, CROP_SECONDS, seed=args.seed, reverb_later=True,
                            augment=augment.Augmenter(musan, rirs, p=RECIPE_P))
    e, e2 = iter(range(1, 10 ** 6)), iter(range(1, 10 ** 6))
    wall, cpu = time_interleaved({"plain": crop_loop(plain, fast, e),
                                  "later": crop_loop(later, fast, e2)}, 0, reps)
    r = [fast / statistics.median(t[k]) for t in (wall, cpu) for k in ("plain", "later")]
    rates["reverb later"] = r
    print(f"    p = {RECIPE_P}, reverb left to the training device (reverb_later): "
          f"{fmt_rate(r[1])} crops/s wall, {fmt_rate(r[3])} CPU; / no augmentation timed "
          f"beside it: {r[1] / r[0]:.2f} wall ({r[3] / r[2]:.2f} CPU)")
    return rates


def reverb_fft():
    wave = torch.randn(int(CROP_SECONDS * SR))
    rir = torch.randn(SR // 2)            # 8000 samples; aligned at sample 0
    exact = len(wave) + len(rir) - 1
    smooth, pow2 = augment._fft_len(exact), 1 << (exact - 1).bit_length()
    w, r = wave.numpy(), rir.numpy()

    def torch_conv(n):
        return lambda: torch.fft.irfft(torch.fft.rfft(wave, n) * torch.fft.rfft(rir, n), n)

    def numpy_conv(n):
        return lambda: np.fft.irfft(np.fft.rfft(w, n) * np.fft.rfft(r, n), n)

    fns = {f"torch, exact {exact} (before)": torch_conv(exact),
           f"torch, power of 2 {pow2}": torch_conv(pow2),
           f"torch, _fft_len {smooth}": torch_conv(smooth),
           f"numpy, exact {exact}": numpy_conv(exact),
           f"numpy, power of 2 {pow2}": numpy_conv(pow2),
           f"numpy, _fft_len {smooth} (after)": numpy_conv(smooth),
           "Augmenter.reverb (after)": lambda: augment.Augmenter.reverb(wave, rir)}
    reps = 2 if Q else 9
    wall, _ = time_interleaved(fns, 1, reps)
    print(f"\n[2] Reverb: one {CROP_SECONDS:g}-s crop * one 0.5-s RIR by FFT (3 transforms), "
          f"{reps} interleaved reps, median ms")
    for name, ts in wall.items():
        print(f"    {name:<36}{1e3 * statistics.median(ts):8.2f} ms")


def dataloader(items, musan, rirs):
    batch = 16 if Q else args.batch_size
    batches = 2 if Q else 8
    # 400 files listed 8 times: enough batches per epoch; each index is its own crop.
    repeated = items * math.ceil((batches + 1) * batch / len(items))
    print(f"\n[3] DataLoader: batches of {batch} x {CROP_SECONDS:g}-s crops with collate_pad, "
          f"{batches} timed batches after the first; crops/s (wall), and crops per CPU-second "
          f"of one worker (its share of a core, whatever the load)")
    print(f"    ('reverb later': p = {RECIPE_P} with the reverb left to the training device, "
          f"train.py's default on a GPU)")
    heads = ("no aug", f"p = {RECIPE_P}", "reverb later")
    print(f"    {'workers':>8}" + "".join(f"{h:>13}" for h in heads) + f"{'per CPU-s:':>12}"
          + "".join(f"{h:>13}" for h in heads))
    out = {}
    for workers in range(1, max(1, args.max_workers) + 1):
        row = []
        for p, later in ((None, False), (RECIPE_P, False), (RECIPE_P, True)):
            aug = None if p is None else augment.Augmenter(musan, rirs, p=p)
            ds = data.TrainCrops(repeated, CROP_SECONDS, seed=args.seed, augment=aug,
                                 reverb_later=later)
            row.append(loader_rate(ds, workers, batch, batches, args.seed))
        out[workers] = row
        print(f"    {workers:>8}" + "".join(f"{fmt_rate(r[0]):>13}" for r in row) + f"{'':>12}"
              + "".join(f"{fmt_rate(r[1]):>13}" for r in row))
    for k, name in ((1, f"p = {RECIPE_P}"), (2, "reverb later")):
        print(f"    {name} / no augmentation, 1 worker: {out[1][k][0] / out[1][0][0]:.2f} wall, "
              f"{out[1][k][1] / out[1][0][1]:.2f} per CPU-second   (goal: >= 0.5)")
    return out


def workers_per_gpu(rates, loader):
    batch = args.batch_size
    cfg = WavLMConfig.wavlm_base_plus()
    crop_macs = macs(cfg, int(CROP_SECONDS * SR))
    rate = args.gpu_tflops * 1e12 * args.gpu_utilization
    print(f"\n[4] Workers per GPU (WavLM Base+, {CROP_SECONDS:g}-s crops, batch {batch})")
    if args.gpu_step_seconds:
        step, batch = args.gpu_step_seconds, args.gpu_step_batch or batch
        print(f"    step time measured: {step * 1e3:.0f} ms per batch of {batch}")
    else:
        step = batch * crop_macs * 2 * 3 / rate
        print(f"    step time on paper: {crop_macs / 1e9:.1f} GMACs per crop x 2 FLOPs x 3 "
              f"(fwd + bwd) x {batch} / ({args.gpu_tflops:g} TFLOP/s x "
              f"{args.gpu_utilization:.0%}) = {step * 1e3:.0f} ms")
    need = batch / step
    recipe = rates[f"p = {RECIPE_P} (SV recipe)"]
    print(f"    the GPU consumes {need:,.0f} crops/s; one worker makes (p = {RECIPE_P}):")
    for label, r in ((f"after, DataLoader, 1 worker, wall (load {os.getloadavg()[0]:.1f})",
                      loader[1][1][0]),
                     ("after, DataLoader, per CPU-second (a free core)", loader[1][1][1]),
                     ("reverb later, DataLoader, 1 worker, wall", loader[1][2][0]),
                     ("reverb later, DataLoader, per CPU-second", loader[1][2][1]),
                     ("before, in-process, per CPU-second", recipe[2])):
        w = need / r
        print(f"    {label:<46}{fmt_rate(r):>7} crops/s -> {w:5.1f} workers per GPU, "
              f"8 GPUs: {8 * (math.ceil(w) + 1)} cores")
    print("    (cores: ceil(workers) + 1 for the training process, per GPU)")


def evaluation():
    utts, trials, cohort, top = (3_000, 12_000, 600, 300) if Q else (145_000, 580_000, 5_994, 300)
    cfg = WavLMConfig.tiny() if Q else WavLMConfig.wavlm_base_plus()
    seconds = 2.0 if Q else 8.0
    torch.manual_seed(args.seed)
    model = classifier.Classifier(MaskedWavLM(cfg), "sv", num_classes=cohort).eval()
    x = torch.randn(1, int(seconds * SR))

    def embed():
        with torch.inference_mode():
            model.score(x)

    reps = 1 if Q else 3
    wall, _ = time_interleaved({"embed": embed}, 1, reps)
    t_utt = statistics.median(wall["embed"])
    gpu_s = utts * macs(cfg, len(x[0])) * 2 / (args.gpu_tflops * 1e12 * args.gpu_utilization)
    print(f"\n[5] Evaluation at VoxCeleb1-E/H scale: {utts:,} utterances, {trials:,} trials")
    print(f"    embedding, {'tiny model (quick)' if Q else 'WavLM Base+ + MHFA'}, one "
          f"{seconds:g}-s utterance, {args.threads} thread(s): {t_utt:.2f} s -> {utts:,} "
          f"utterances {t_utt * utts / 3600:,.1f} CPU-hours")
    print(f"    on a GPU from MACs ({args.gpu_tflops:g} TFLOP/s x {args.gpu_utilization:.0%}): "
          f"{gpu_s:,.0f} s of compute (batch 1 of uneven lengths reaches less; reading "
          f"{utts:,} files adds I/O)")
    rng = np.random.default_rng(args.seed)
    emb = rng.standard_normal((utts, 256)).astype(np.float32)
    names = [f"id{i // 50:05d}/v/{i:05d}.wav" for i in range(utts)]
    embeddings = dict(zip(names, emb))
    pairs = rng.integers(0, utts, (trials, 2))
    trial_list = [(int(i % 2), names[a], names[b]) for i, (a, b) in enumerate(pairs)]
    cohort_emb = rng.standard_normal((cohort, 256)).astype(np.float32)
    t0 = time.perf_counter()
    scoring.cosine_score(embeddings, trial_list)
    t_cos = time.perf_counter() - t0
    t0 = time.perf_counter()
    scoring.as_norm(embeddings, trial_list, cohort_emb, top_n=top)
    t_as = time.perf_counter() - t0
    print(f"    cosine scoring of {trials:,} trials: {t_cos:.1f} s;  AS-norm (cohort {cohort:,}, "
          f"top {top}): {t_as:.1f} s  ({args.threads} thread(s))")


if __name__ == "__main__":
    main()
