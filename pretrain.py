"""
Self-supervised pre-training of a WavLM by masked prediction, at toy scale: HuBERT's
first iteration (Hsu et al. 2021, "HuBERT", arXiv 2106.07447, Sec. II) with WavLM's
utterance mixing as an option (Chen et al. 2022, "WavLM", arXiv 2110.13900, Sec. III).
The paper we reproduce prunes a *pre-trained* model; this file makes one offline, so
that the toy demo can prune what pre-training learned instead of random weights.

    python pretrain.py --data toy                        # the toy unlabelled corpus, generated
    python pretrain.py --data-root /my/audio --out runs/my_ssl   # any folder of .wav/.flac
    python train.py --data toy --ssl runs/pretrain_toy/tiny_wavlm.pt --target 0.7
    python pretrain.py --probe runs/pretrain_toy/tiny_wavlm.pt --probe-seed 0 1 2   # judge it first

The recipe (docs/method.md Sec. 9):

1. Targets. Each utterance becomes MFCC frames on the model's own frame grid: a 400-
   sample window every 320 samples, exactly the CNN's receptive field and stride, so that
   label t and CNN frame t describe the same samples. 13 coefficients + deltas + delta-
   deltas = 39 dims (HuBERT's first-iteration features), the utterance mean removed (the
   toy's sessions differ mostly by channel EQ, which is a constant offset in the cepstrum;
   clusters should follow phones, not microphones; `--targets mfcc` keeps the mean, and
   with it what the average envelope says about the voice; `--targets layer:L
   --targets-from CK` clusters layer L of a first model instead, HuBERT's second
   iteration). k-means with K = 100 clusters on a
   sample of frames gives every frame a label z_t = argmin_k ||m_t - c_k||.
2. Span masking (HuBERT Sec. II-B, as in wav2vec 2.0): int(p T / l + u) spans of l = 10
   frames start at distinct random frames (p = 0.8, u ~ U[0, 1)); they overlap, so about
   half of the frames end up masked. The projected CNN features of masked frames are
   replaced by a learned vector, mask_emb.
3. Prediction (HuBERT Eq. 1-3). The last layer's output o_t is projected (A o_t) and
   compared with one embedding e_c per cluster by cosine similarity at temperature 0.1:
       p(c | X~, t) = exp(cos(A o_t, e_c) / 0.1) / sum_c' exp(cos(A o_t, e_c') / 0.1)
   The loss is the cross-entropy over the masked frames M only (HuBERT's alpha = 1):
       L = -(1 / |M|) sum_{t in M} log p(z_t | X~, t)
   Predicting unmasked frames would only teach the model to copy its input.
4. Utterance mixing (WavLM Sec. III-B; --mix-prob). A share of the crops get a segment of
   another crop of the batch added, over less than half of their length, at a random
   energy ratio; their targets stay those of the clean crop, so the model must learn to
   ignore the interfering voice (denoising masked speech modelling).

Outputs in --out (default runs/pretrain_<data>):
  tiny_wavlm.pt   the encoder as {"cfg", "model"} with the key names of Microsoft's
                  WavLM-Base+.pt (mask_emb included, the prediction head not, like theirs);
                  `train.py --ssl` reads it through pretrained.load_pretrained
  checkpoint.pt   everything needed to continue (--resume), the k-means centroids included
  log.jsonl       one line per step (loss, accuracy on masked and unmasked frames, lr)
                  and the held-out evaluations
  report.json     data, targets, final losses, wall time; loss.png the curves
"""

import argparse
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchaudio

import checkpoints
import data
import devices
import metrics
import plots
import pretrained
import run_folder
import scoring
import toy_corpus
from checkpoints import atomic_torch_save, load_state_exactly, read_checkpoint
from wavlm_masked import MaskedWavLM, WavLMConfig, frame_lengths

SAMPLE_RATE = data.SAMPLE_RATE
HOP, WINDOW = 320, 400          # the CNN's stride and receptive field in samples (20 ms, 25 ms)
TEMPERATURE = 0.1               # HuBERT's tau for the cosine-similarity logits
FINAL_DIM = 64                  # size of the projection A o_t (HuBERT Base: 256, for 768 dims)
CONV_LAYERS = WavLMConfig.tiny().conv_layers   # every WavLM shares the 400/320 frame grid


# ----------------------------------------------------------------------------- targets
_MFCC = torchaudio.transforms.MFCC(
    sample_rate=SAMPLE_RATE, n_mfcc=13,
    melkwargs=dict(n_fft=WINDOW, win_length=WINDOW, hop_length=HOP, n_mels=40, center=False))


def mfcc_features(wave: torch.Tensor) -> torch.Tensor:
    """(S,) -> (T, 39) MFCC + delta + delta-delta as computed, with T equal to the CNN's
    frame count for S samples (center=False: frame t = samples [320t, 320t+400))."""
    m = _MFCC(wave.float())                                                  # (13, T)
    d1 = torchaudio.functional.compute_deltas(m)
    d2 = torchaudio.functional.compute_deltas(d1)
    return torch.cat([m, d1, d2]).T                                          # (T, 39)


TARGETS = {"mfcc-cmn": "MFCC frames with the utterance mean removed (HuBERT's first "
                       "iteration): clusters follow the sounds, not the session",
           "mfcc": "MFCC frames as computed: the mean keeps each voice's average spectral "
                   "envelope (and its channel), so the targets can carry who speaks",
           "layer:L": "the hidden states of layer L of the model --targets-from names "
                      "(HuBERT's second iteration: k-means on what the first model learned)"}


def mfcc_frames(wave: torch.Tensor, remove_mean: bool = True) -> torch.Tensor:
    """(S,) -> (T, 39) mfcc_features, by default with the utterance mean removed (cepstral
    mean normalisation, --targets mfcc-cmn): the k-means input."""
    feats = mfcc_features(wave)
    return feats - feats.mean(0, keepdim=True) if remove_mean else feats


def target_features(targets: str, targets_from: str = None):
    """--targets -> a function wave (S,) -> (T, D) frames for the k-means, on the model's
    frame grid: the MFCC frames (D = 39), or the hidden states of layer L (0 = the
    transformer's input) of a pre-trained model (D = its width; HuBERT Sec. II-C: the
    second iteration clusters the first model's layer 6 of 12)."""
    if not targets.startswith("layer:"):
        return lambda wave: mfcc_frames(wave, remove_mean=targets == "mfcc-cmn")
    model, layer = pretrained.load_pretrained(targets_from).eval(), int(targets.split(":")[1])
    if not 0 <= layer <= model.config.num_layers:
        raise ValueError(f"--targets {targets}: {targets_from} has layers 0 to "
                         f"{model.config.num_layers}")

    @torch.inference_mode()
    def frames(wave):
        hidden, _ = model(wave[None].float())
        return hidden[layer][0].float().clone()                         # (T, D)
    return frames


def kmeans(x: torch.Tensor, k: int, iterations: int = 30, seed: int = 0) -> torch.Tensor:
    """Lloyd's k-means with k-means++ seeding (Arthur & Vassilvitskii 2007) -> (k, D)
    centroids. Deterministic for a given seed; an empty cluster keeps its centroid."""
    g = torch.Generator().manual_seed(seed)
    x = x.double()
    centroids = [x[torch.randint(len(x), (1,), generator=g)][0]]
    nearest = ((x - centroids[0]) ** 2).sum(1)                    # squared distance to the set
    for _ in range(k - 1):       # the next seed is drawn with probability ~ squared distance
        c = x[torch.multinomial(nearest, 1, generator=g)][0]
        centroids.append(c)
        nearest = torch.minimum(nearest, ((x - c) ** 2).sum(1))
    centroids = torch.stack(centroids)                                       # (k, D)
    for _ in range(iterations):
        assign = torch.cdist(x, centroids).argmin(1)                         # (N,)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled, None]
    return centroids.float()


def assign_clusters(feats: torch.Tensor, centroids: torch.Tensor, scale: torch.Tensor):
    """(T, 39) -> (T,) label of the nearest centroid, in the scaled feature space."""
    return torch.cdist(feats / scale, centroids).argmin(1)


@dataclass
class Targets:
    """The k-means model of step 1: features are divided by `scale` (each dimension's
    standard deviation over the k-means sample, so that c0, the log energy, does not
    outweigh the 38 others) before the nearest centroid is taken."""
    centroids: torch.Tensor        # (K, 39)
    scale: torch.Tensor            # (39,)

    def labels(self, feats):
        return assign_clusters(feats, self.centroids, self.scale)


def fit_targets(feats, clusters, max_frames, seed) -> Targets:
    """k-means on up to max_frames of the (T, 39) MFCC frames, drawn evenly from every file."""
    every = max(1, sum(len(f) for f in feats) // max_frames)
    sample = torch.cat(feats)[::every]                                       # (N, 39)
    scale = sample.std(0).clamp_min(1e-5)
    return Targets(kmeans(sample / scale, clusters, seed=seed), scale)


# ----------------------------------------------------------------------------- masking
def span_mask(num_frames: int, mask_prob: float, mask_length: int, rng) -> torch.Tensor:
    """(T,) bool: int(p T / l + u) spans of l frames at distinct random starts (they may
    overlap), as wav2vec 2.0 / HuBERT / WavLM compute_mask_indices with static lengths."""
    spans = int(mask_prob * num_frames / mask_length + rng.random())
    starts = rng.choice(num_frames - mask_length + 1, min(spans, num_frames - mask_length + 1),
                        replace=False)
    mask = torch.zeros(num_frames, dtype=torch.bool)
    for s in starts:
        mask[s:s + mask_length] = True
    return mask


def mix_utterances(waves: torch.Tensor, mix_prob: float, rng, energy_db=(-5.0, 5.0)):
    """WavLM's utterance mixing: each crop, with probability mix_prob, gets a segment of
    another crop of the batch added at a random place, shorter than half the crop, scaled
    so that the primary-to-secondary energy ratio is uniform in energy_db. (B, S) -> (B, S)."""
    B, S = waves.shape
    out = waves.clone()
    for i in range(B):
        if B < 2 or rng.random() >= mix_prob:
            continue
        j = int(rng.integers(B - 1))
        j += j >= i                                                  # any crop but this one
        length = int(rng.integers(1, S // 2))
        src, dst = int(rng.integers(0, S - length + 1)), int(rng.integers(0, S - length + 1))
        segment = waves[j, src:src + length]
        ratio_db = rng.uniform(*energy_db)
        e_primary = waves[i].pow(2).mean()
        e_segment = segment.pow(2).mean().clamp_min(1e-10)
        gain = torch.sqrt(e_primary / (e_segment * 10 ** (ratio_db / 10)))
        out[i, dst:dst + length] += gain * segment
    return out


# ------------------------------------------------------------------------------- model
class MaskedPrediction(nn.Module):
    """A MaskedWavLM with HuBERT's pre-training parts: the mask embedding (kept in the
    exported checkpoint, as in WavLM's releases), the projection A and the cluster
    embeddings e_c (pre-training only)."""

    def __init__(self, config: WavLMConfig, num_clusters: int, final_dim: int = FINAL_DIM):
        super().__init__()
        self.wavlm = MaskedWavLM(config)
        E = config.hidden_size
        self.mask_emb = nn.Parameter(torch.empty(E).uniform_())         # as fairseq initialises it
        self.final_proj = nn.Linear(E, final_dim)
        self.label_embs = nn.Parameter(torch.empty(num_clusters, final_dim).uniform_(-1, 1))

    def forward(self, waves, frame_mask):
        """waves (B, S), frame_mask (B, T) bool -> cluster logits (B, T, K)."""
        features, z_last = self.wavlm.feature_extractor(waves)                  # (B, T, C)
        x = self.wavlm.feature_projection(features, z_last)                     # (B, T, E)
        x = torch.where(frame_mask[..., None], self.mask_emb.to(x.dtype), x)
        last = self.wavlm.encoder(x)[-1]                                        # (B, T, E)
        y = F.normalize(self.final_proj(last), dim=-1)                          # (B, T, D)
        return y @ F.normalize(self.label_embs, dim=-1).T / TEMPERATURE         # (B, T, K)


def masked_prediction_loss(logits, targets, frame_mask):
    """Cross-entropy over the masked frames only: logits (B, T, K), targets (B, T) long,
    frame_mask (B, T) bool -> scalar mean over the masked frames."""
    return F.cross_entropy(logits[frame_mask], targets[frame_mask])


# -------------------------------------------------------------------------------- data
def list_audio(root):
    """Every .wav / .flac under root, sorted; a clear error when there is none."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"--data-root {root} is not a folder")
    paths = data.list_audio_files(root)
    if not paths:
        raise FileNotFoundError(f"no .wav or .flac files under {root}")
    return paths


class Crops:
    """Fixed-length crops with their frame labels. A crop starts on a multiple of the
    320-sample hop, so that CNN frame j of the crop is frame start/320 + j of the file.
    Each step's batch, crops, masks and mixing come from numpy default_rng([seed, step]):
    a resumed run draws exactly the examples the uninterrupted one would have."""

    def __init__(self, paths, labels, lengths, crop_seconds):
        self.paths, self.labels, self.lengths = paths, labels, lengths      # lengths in samples
        self.samples = int(round(crop_seconds * SAMPLE_RATE))
        self.frames = int(frame_lengths(torch.tensor([self.samples]), CONV_LAYERS)[0])

    def batch(self, batch_size, rng):
        waves, targets = [], []
        for i in rng.integers(0, len(self.paths), batch_size):
            labels = self.labels[i]
            last = (self.lengths[i] - self.samples) // HOP     # the crop must fit in the file
            start = int(rng.integers(0, last + 1))                            # in frames
            x, rate = data.read_samples(self.paths[i], start * HOP, start * HOP + self.samples)
            if rate != SAMPLE_RATE:       # its labels were made on the resampled audio: slice that
                x = data.load_audio(self.paths[i])[start * HOP:start * HOP + self.samples].numpy()
            waves.append(torch.from_numpy(x))
            targets.append(labels[start:start + self.frames])
        return torch.stack(waves), torch.stack(targets).long()


# ---------------------------------------------------------------------------- the loop
def lr_at(step, total, peak, warmup_frac=0.08):
    """HuBERT's schedule: linear warm-up over the first 8 % of the steps, then linear
    decay to zero."""
    warmup = max(1, int(warmup_frac * total))
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * max(0.0, (total - step) / max(1, total - warmup))


def evaluate_heldout(model, crops: Crops, args):
    """Masked-prediction loss and accuracy on held-out crops, with fixed masks."""
    rng = np.random.default_rng([args.seed, 10 ** 9])
    model.eval()
    losses, hits, count = [], 0, 0
    with torch.no_grad():
        for _ in range(args.eval_batches):
            waves, targets = crops.batch(args.batch_size, rng)
            mask = torch.stack([span_mask(crops.frames, args.mask_prob, args.mask_length, rng)
                                for _ in range(len(waves))])
            logits = model(waves, mask)
            losses.append(masked_prediction_loss(logits, targets, mask).item())
            hits += (logits.argmax(-1) == targets)[mask].sum().item()
            count += mask.sum().item()
    model.train()
    return dict(heldout_loss=float(np.mean(losses)), heldout_masked_acc=hits / max(1, count))


def pretraining_data(args, state):
    """The corpus, its k-means targets (fitted now, or the resumed run's) and the training
    and held-out crops -> (root, paths, info, targets, held, train_set, heldout, perplexity)."""
    root, paths, feats, lengths, info = load_corpus(args)   # feats: [(T, 39)] MFCC per file
    if state is None:
        held = max(1, len(paths) // 20)       # the first 5 % of the files: held-out loss
        targets = fit_targets(feats[held:], args.clusters, args.kmeans_frames, args.seed)
    else:
        held = state["held"]
        targets = Targets(state["centroids"], state["scale"])
    labels = [targets.labels(f).to(torch.uint8 if args.clusters <= 256 else torch.int16)
              for f in feats]
    crop = int(round(args.crop_seconds * SAMPLE_RATE))
    usable = [i for i in range(len(paths)) if lengths[i] >= crop]
    if len(usable) < len(paths):
        print(f"note: {len(paths) - len(usable)} file(s) shorter than the "
              f"{args.crop_seconds:g}-s crop are left out")

    def crops(keep):
        chosen = [i for i in usable if keep(i)]
        return Crops([paths[i] for i in chosen], [labels[i] for i in chosen],
                     [lengths[i] for i in chosen], args.crop_seconds)
    heldout, train_set = crops(lambda i: i < held), crops(lambda i: i >= held)
    if not train_set.paths or not heldout.paths:
        run_folder.fail(f"too few files of at least {args.crop_seconds:g} s under {root} "
                        f"to pre-train and hold some out; lower --crop-seconds or add audio")
    usage = torch.bincount(torch.cat(train_set.labels).long(), minlength=args.clusters).double()
    usage = usage / usage.sum()
    perplexity = float(torch.exp(-(usage[usage > 0] * usage[usage > 0].log()).sum()))
    return root, paths, info, targets, held, train_set, heldout, perplexity


def files_hash(root, paths) -> str:
    """Which files, relative to their folder: a moved corpus still resumes, another does not."""
    return hashlib.sha1("\n".join(os.path.relpath(p, root) for p in paths)
                        .encode()).hexdigest()[:16]


def pretrain_step(model, optimizer, train_set, step, args) -> dict:
    """One step of masked prediction; the batch, mixing and masks come from (seed, step)
    alone, so a resumed run draws exactly what the uninterrupted one would."""
    rng = np.random.default_rng([args.seed, step])
    waves, target_frames = train_set.batch(args.batch_size, rng)
    if args.mix_prob > 0:
        waves = mix_utterances(waves, args.mix_prob, rng)
    mask = torch.stack([span_mask(train_set.frames, args.mask_prob, args.mask_length, rng)
                        for _ in range(len(waves))])                          # (B, T)
    for group in optimizer.param_groups:
        group["lr"] = lr_at(step, args.steps, args.lr)
    logits = model(waves, mask)                                               # (B, T, K)
    loss = masked_prediction_loss(logits, target_frames, mask)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
    optimizer.step()
    with torch.no_grad():
        hit = logits.argmax(-1) == target_frames
    return dict(step=step + 1, loss=loss.item(), masked_acc=hit[mask].float().mean().item(),
                unmasked_acc=hit[~mask].float().mean().item(),
                masked_share=mask.float().mean().item(), lr=optimizer.param_groups[0]["lr"])


def write_outputs(model, args, log_path, t_start, data_description):
    """tiny_wavlm.pt (unilm layout), report.json with the curves, loss.png -> report."""
    out, (info, files, train_files, heldout_files, perplexity) = args.out, data_description
    export = pretrained.unilm_checkpoint(model.wavlm, model.mask_emb, mask_prob=args.mask_prob,
                                         mask_length=args.mask_length, label_rate=50,
                                         num_clusters=args.clusters, mix_prob=args.mix_prob)
    atomic_torch_save(export, os.path.join(out, "tiny_wavlm.pt"))
    rows = [json.loads(line) for line in open(log_path)]
    last = [r for r in rows if "heldout_loss" in r][-1]
    every = max(1, len(rows) // 120)             # the curves, ~120 points, for notebook 08
    mean = lambda key, rs: float(np.mean([r[key] for r in rs]))
    curve = [dict(step=rows[i + every - 1]["step"],
                  **{k: round(mean(k, rows[i:i + every]), 4)
                     for k in ("loss", "masked_acc", "unmasked_acc")})
             for i in range(0, len(rows) - every + 1, every)]
    heldout_curve = [dict(step=r["step"], loss=round(r["heldout_loss"], 4),
                          masked_acc=round(r["heldout_masked_acc"], 4))
                     for r in rows if "heldout_loss" in r]
    report = dict(data=info, files=files, train_files=train_files, heldout_files=heldout_files,
                  clusters=args.clusters, cluster_perplexity=round(perplexity, 2),
                  steps=args.steps, parameters=model.wavlm.num_params(),
                  final=dict(loss=mean("loss", rows[-100:]),
                             masked_acc=mean("masked_acc", rows[-100:]),
                             unmasked_acc=mean("unmasked_acc", rows[-100:]),
                             heldout_loss=last["heldout_loss"],
                             heldout_masked_acc=last["heldout_masked_acc"]),
                  train_seconds=rows[-1]["seconds"],
                  wall_seconds_this_attempt=round(time.time() - t_start, 1),
                  command="python pretrain.py " + " ".join(a for a in sys.argv[1:]
                                                           if a != "--resume"),
                  args=vars(args), curve=curve, heldout_curve=heldout_curve)
    checkpoints.write_json(os.path.join(out, "report.json"), report)
    plots.plot_pretraining(log_path, os.path.join(out, "loss.png"))
    print(f"wrote {os.path.join(out, 'tiny_wavlm.pt')} (train.py --ssl reads it); "
          f"report in {os.path.join(out, 'report.json')}")
    return report


def run_steps(stop, step, seconds_before, args, log_path, save, take_step, evaluate, describe):
    """The loop of both objectives (this file's and dino.py's): take_step(step) -> its
    log record; evaluate() -> held-out values, every --eval-every steps and at the end;
    save(step, seconds) every --save-minutes, at the end, and on Ctrl-C or SIGTERM, after
    which the run exits with the command that resumes it. One log line per step."""
    stop.defer()                        # from here on, a signal ends the loop after its step
    t0 = last_save = time.time()
    log = open(log_path, "a")
    while step < args.steps:
        record = take_step(step)
        step = record["step"]
        record["seconds"] = round(seconds_before + time.time() - t0, 2)
        if (args.eval_every and step % args.eval_every == 0) or step == args.steps:
            record.update(evaluate())
            print(f"step {step}/{args.steps}: loss {record['loss']:.3f}, {describe(record)}",
                  flush=True)
        log.write(json.dumps(record) + "\n")
        log.flush()
        if stop.requested or step == args.steps or time.time() - last_save > 60 * args.save_minutes:
            save(step, seconds_before + time.time() - t0)
            last_save = time.time()
        if stop.requested and step < args.steps:
            stop.restore()
            run_folder.stopped(log, stop, step, args.steps, sys.argv[1:], world=1, is_main=True)
    log.close()
    stop.restore()


def train(args):
    stop, t_start, out = devices.StopRequest(), time.time(), args.out
    ckpt_path, log_path = os.path.join(out, "checkpoint.pt"), os.path.join(out, "log.jsonl")
    # a finished run resumed is exported again (it never has "nothing to do")
    run_folder.check_out_folder(out, args.resume, re_export=True)
    try:
        state = read_checkpoint(ckpt_path) if args.resume else None
    except ValueError as e:                        # a damaged checkpoint: our words, no traceback
        run_folder.fail(e)
    before = state and (state["args"].get("targets", "mfcc-cmn"),   # older runs: mfcc-cmn
                        state["args"].get("targets_from"))
    if before and before != (args.targets, args.targets_from):
        run_folder.fail(f"{out} was pre-trained with --targets {before[0]}"
                        + (f" --targets-from {before[1]}" if before[1] else "")
                        + "; resume with the same targets or choose another --out")
    root, paths, info, targets, held, train_set, heldout, perplexity = pretraining_data(args, state)
    if state is not None and state["files_hash"] != files_hash(root, paths):
        run_folder.fail(f"{out} was pre-trained on another set of files ({state['files']} "
                        f"files); resume with the same data or choose another --out")
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(args.seed)
    model = MaskedPrediction(WavLMConfig.tiny(dropout=args.dropout,
                                              attention_dropout=args.dropout), args.clusters)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.98), eps=1e-6,
                                  weight_decay=0.01)          # HuBERT's Adam settings
    step, seconds_before = 0, 0.0
    if state is not None:
        load_state_exactly(model, state["model"], ckpt_path)
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        step, seconds_before = state["step"], state["seconds"]
        run_folder.truncate_log(log_path, step)
        print(f"resuming at step {step} of {args.steps}")
    else:
        run_folder.start_fresh(out)      # a log without a checkpoint: moved aside, said

    def save(step, seconds):
        atomic_torch_save(dict(step=step, model=model.state_dict(),
                               optimizer=optimizer.state_dict(),
                               torch_rng=torch.get_rng_state(), centroids=targets.centroids,
                               scale=targets.scale, held=held, files=len(paths),
                               files_hash=files_hash(root, paths), seconds=seconds,
                               args=run_folder.plain_values(vars(args))), ckpt_path)

    print(f"pre-training a tiny WavLM ({model.wavlm.num_params():,} parameters) on "
          f"{len(train_set.paths)} files, {len(heldout.paths)} held out; cluster perplexity "
          f"{perplexity:.1f} of {args.clusters}", flush=True)
    model.train()
    run_steps(stop, step, seconds_before, args, log_path, save,
              take_step=lambda step: pretrain_step(model, optimizer, train_set, step, args),
              evaluate=lambda: evaluate_heldout(model, heldout, args),
              describe=lambda r: f"held-out loss {r['heldout_loss']:.3f}, masked accuracy "
                                 f"{r['heldout_masked_acc']:.3f}")
    return write_outputs(model, args, log_path, t_start, (info, len(paths), len(train_set.paths),
                                                          len(heldout.paths), perplexity))


def corpus_files(args):
    """--data toy (the unlabelled toy corpus, generated on first use) or --data-root ->
    (root, sorted audio paths, a description for the report). dino.py reads it too."""
    if args.data == "toy":
        root = os.path.join(args.cache_dir or data.default_cache_dir(),
                            f"toy_unlabelled_seed{args.toy_seed}"
                            + ("" if args.toy_size == "default" else f"_{args.toy_size}"))
        made = toy_corpus.make_toy_unlabelled(root, args.toy_seed, args.toy_size)
        info = dict(kind="toy_unlabelled", folder=os.path.basename(root), seed=args.toy_seed,
                    size=args.toy_size, speakers=made["counts"]["speakers"])
    else:
        root = args.data_root
        info = dict(kind="folder", root=root)
    return root, list_audio(root), info


def load_corpus(args):
    """The audio files to pre-train on, each file's MFCC frames, and a description for
    the report. Every file is read here, so a damaged one is named before training."""
    try:
        root, paths, info = corpus_files(args)
        features = target_features(args.targets, args.targets_from)
        print(f"reading {len(paths)} files for their {args.targets} frames ...", flush=True)
        waves = (data.load_audio(p) for p in paths)           # one at a time: a real corpus
        feats, lengths = [], []                               # does not fit in memory
        for wave in waves:
            feats.append(features(wave))
            lengths.append(len(wave))
    except (OSError, RuntimeError, ValueError) as e:
        run_folder.fail(e)
    info.update(files=len(paths), hours=round(sum(lengths) / SAMPLE_RATE / 3600, 3))
    return root, paths, feats, lengths, info


# --------------------------------------------------------------------------- the probe
# Does a pre-training help? Fine-tuning and pruning take hours to answer; this answers in
# a minute, with the encoder frozen. Each layer's frames are averaged into one vector per
# utterance and the SV trials are scored by cosine, as SUPERB-style layer-wise probing
# does with a frozen upstream (Yang et al. 2021, arXiv 2105.01051; Chen et al. 2022,
# WavLM Fig. 2, the per-layer weights of the SV task). The rule it serves: a pre-training
# whose layers do not beat the same model at random init gives fine-tuning and pruning
# nothing to start from. The classical floor: the mean (and std) of an utterance's MFCCs.
#
# Raw cosine has a blind spot: when every utterance's vector shares one large direction
# (a random encoder's do: all their cosines are near 1), the EER measures how much the
# rest stands out of it, not only what the rest holds. So each system is also scored after
# subtracting the mean vector of a few training-speaker files, the mean subtraction SV
# back-ends apply before cosine (the authors' `--cal_mean`; scoring.build_cohort): a gain
# that survives it is speaker information, one that vanishes was the shared direction.
MFCC_SYSTEMS = ("mfcc mean", "mfcc mean+std")
CENTRE_PER_SPEAKER = 4    # files per training speaker in the mean: 160 of the toy's 480,
                          # as AS-norm's cohort takes them (train.py --cohort-utts)


def pooled_layers(model: MaskedWavLM):
    """A frozen encoder as an embedder: wave (1, S) -> (L + 1, E), the time average of
    each hidden state. Row 0 is the transformer's input (projected CNN features plus the
    positional convolution, layer-normed), row l the output of layer l. One utterance at
    a time, so every frame is a valid one (no padding to leave out of the mean)."""
    model.eval()

    def embed(wave):
        with torch.no_grad():
            hidden, _ = model(wave)                              # L + 1 tensors (1, T, E)
        return torch.stack([h[0].mean(0) for h in hidden])      # (L + 1, E)
    return embed


def probe_encoder(path) -> MaskedWavLM:
    """The encoder a --probe path names: this file's own training checkpoint (a run's
    `checkpoint.pt`, in progress or paused: its encoder at that step, so a run can be judged
    before it ends), or anything pretrained.load_pretrained reads (e.g. a `tiny_wavlm.pt`).
    load_pretrained goes first, so a released model's file (up to a GB) is read once; only
    a layout it refuses is read again, as a run checkpoint (a few MB)."""
    try:
        return pretrained.load_pretrained(path)
    except ValueError:
        state = read_checkpoint(path) if os.path.isfile(path) else None
        if not (isinstance(state, dict) and {"model", "args", "centroids"} <= state.keys()):
            raise                                        # load_pretrained's own error
    model = MaskedPrediction(WavLMConfig.tiny(), state["args"]["clusters"])
    load_state_exactly(model, state["model"], path)
    return model.wavlm


def pooled_mfcc(wave):
    """wave (1, S) -> the two MFCC_SYSTEMS' embeddings: the mean over time of
    mfcc_features (39,) (not of mfcc_frames, whose mean is removed), and mean and std (78,)."""
    feats = mfcc_features(wave[0])                                # (T, 39)
    mean = feats.mean(0)
    return [mean, torch.cat([mean, feats.std(0)])]


def view_eers(embed, paths, trials, mean_paths=()) -> dict:
    """EER of cosine scoring for each view an embedder returns: embed maps a wave (1, S)
    to (V, E) (V layers), every file of `paths` is embedded once.
    -> {"eer": [EER in [0, 1]] * V, "eer_centred": the same after subtracting, per view,
    the mean embedding of `mean_paths` (None without them)."""
    cache = scoring.embed_paths(embed, paths)                     # {path: (V, E)}
    labels = np.array([y for y, _, _ in trials])
    views = len(next(iter(cache.values())))

    def eers(means):
        return [metrics.compute_eer(scoring.cosine_score(
            {p: v[k] for p, v in cache.items()}, trials, mean=means[k]), labels)[0]
            for k in range(views)]
    out = dict(eer=eers([None] * views), eer_centred=None)
    if mean_paths:
        embedded = list(scoring.embed_paths(embed, mean_paths).values())
        out["eer_centred"] = eers([torch.stack([e[k] for e in embedded]).mean(0)
                                   for k in range(views)])        # V means (E,)
    return out


def probe(checkpoints=(), seeds=(0,), spec=None, trial_list=None,
          centre_per_speaker: int = CENTRE_PER_SPEAKER) -> dict:
    """The layer-wise probe: EER per layer of the tiny WavLM at random init (one row per
    seed, torch.manual_seed(seed) as train.py --ssl tiny builds it), of every checkpoint
    (probe_encoder: this file's tiny_wavlm.pt or a run's checkpoint.pt, ...), and the
    MFCC floor; each scored raw and mean-subtracted (the mean of `centre_per_speaker` files
    of every training speaker; 0: raw only). spec: a data.DataSpec (default: the toy SV
    corpus); trial_list: one of its lists (default: the first, vox1_o).
    -> {"rows": [{"system", "eer": [per layer], "eer_centred": [per layer] or None}], ...}"""
    t0 = time.time()
    spec = spec or data.prepare_data("toy")
    trial_list = trial_list or spec.eval_names()[0]
    trials, paths = spec.sv_trials(trial_list), spec.eval_paths(trial_list)
    mean_paths = (scoring.cohort_paths(spec.train_items, centre_per_speaker)[0]
                  if centre_per_speaker else ())
    rows = []
    for seed in seeds:
        model = pretrained.build_ssl("tiny", (), seed)
        rows.append(dict(system=f"random (seed {seed})",
                         **view_eers(pooled_layers(model), paths, trials, mean_paths)))
    for path in checkpoints:
        model = probe_encoder(os.fspath(path))
        # named by folder and file: every run's files are checkpoint.pt and tiny_wavlm.pt
        folder, name = os.path.split(os.path.abspath(path))
        rows.append(dict(system=f"{os.path.basename(folder)}/{name}",
                         **view_eers(pooled_layers(model), paths, trials, mean_paths)))
    mfcc = view_eers(pooled_mfcc, paths, trials, mean_paths)      # one view per system
    rows += [dict(system=name, eer=[mfcc["eer"][k]],
                  eer_centred=[mfcc["eer_centred"][k]] if mean_paths else None)
             for k, name in enumerate(MFCC_SYSTEMS)]
    return dict(trial_list=trial_list, trials=len(trials), files=len(paths), seeds=list(seeds),
                centre_files=len(mean_paths), rows=rows, seconds=round(time.time() - t0, 1))


def random_spread(result, key="eer") -> dict:
    """Mean and sample std over the random-init rows, per layer (None with one seed)."""
    randoms = np.array([r[key] for r in result["rows"] if r["system"].startswith("random")])
    if len(randoms) < 2:
        return None
    return dict(mean=randoms.mean(0).tolist(), std=randoms.std(0, ddof=1).tolist())


PROBE_SCORINGS = (("eer", "raw cosine"), ("eer_centred", "cosine after mean subtraction"))


def probe_table(result) -> str:
    """The probe as text: a block per scoring (raw, then mean-subtracted when measured),
    one row per system, EER % per layer and the best layer; the MFCC rows have no layers,
    their EER stands under "best"."""
    layers, width = max(len(r["eer"]) for r in result["rows"]), 12
    name_width = max(24, 2 + max(len(r["system"]) for r in result["rows"]))
    pct = lambda x: f"{100 * x:.2f}"
    lines = [f"probe: frozen encoder, each layer mean-pooled over time, cosine-scored on "
             f"{result['trial_list']} ({result['trials']:,} trials, {result['files']} files); "
             f"EER %, {result['seconds']:.0f} s"]
    for key, scoring_name in PROBE_SCORINGS:
        if result["rows"][0].get(key) is None:
            continue
        centred = f" (the mean of {result['centre_files']} training files)" \
            if key == "eer_centred" else ""
        lines += [f"{scoring_name}{centred}:",
                  f"{'system':<{name_width}}" + "".join(f"{f'layer {l}':>{width}}"
                                                        for l in range(layers))
                  + "  best"]
        for r in result["rows"]:
            eer = r[key]
            cells = [pct(e) for e in eer] if len(eer) > 1 else ["-"] * layers
            best = int(np.argmin(eer))                   # the first of equal layers
            where = f" (layer {best})" if len(eer) > 1 else ""
            lines.append(f"{r['system']:<{name_width}}" + "".join(f"{c:>{width}}" for c in cells)
                         + f"  {pct(eer[best])}{where}")
        spread = random_spread(result, key)
        if spread:
            lines.append(f"{'random, mean ± std':<{name_width}}" + "".join(
                f"{f'{pct(m)}±{pct(s)}':>{width}}" for m, s in zip(spread["mean"], spread["std"])))
    return "\n".join(lines)


def run_probe(args):
    """--probe: check the checkpoint paths first (one error line, exit 2), run, print the
    table, write --out as JSON if given."""
    for path in args.probe:
        if not os.path.exists(path):
            run_folder.fail(f"--probe {path}: no such checkpoint file or folder")
    try:
        spec = data.prepare_data(args.probe_data, data_root=args.data_root,
                                 cache_dir=args.cache_dir, seed=args.toy_seed,
                                 toy_size=args.toy_size)
        if spec.task != "sv":
            raise ValueError(f"--probe-data {args.probe_data} is not a speaker-verification set")
        result = probe(args.probe, args.probe_seed, spec,
                       centre_per_speaker=args.probe_centre)
    except (OSError, RuntimeError, ValueError, KeyError) as e:
        run_folder.fail(" ".join(str(e).split()))
    result["random_spread"] = random_spread(result)
    result["random_spread_centred"] = random_spread(result, "eer_centred") \
        if result["centre_files"] else None
    print(probe_table(result))
    if args.out:
        checkpoints.write_json(args.out, result)
        print(f"wrote {args.out}")
    return result


def add_corpus_args(p):
    """The flags that name the audio to pre-train on (corpus_files), here and in dino.py."""
    p.add_argument("--data", choices=["toy", "folder"], default="folder",
                   help="'toy': the generated unlabelled toy corpus; 'folder': --data-root")
    p.add_argument("--data-root", help="a folder of 16-kHz .wav/.flac files (any layout)")
    p.add_argument("--cache-dir", help="where the toy corpus is generated")
    p.add_argument("--toy-seed", type=int, default=0)
    p.add_argument("--toy-size", choices=["default", "tiny"], default="default",
                   help=argparse.SUPPRESS)


def add_loop_args(p, eval_every, eval_batches):
    """The flags of run_steps' loop, here and in dino.py."""
    p.add_argument("--eval-every", type=int, default=eval_every,
                   help="held-out loss every N steps, and at the end (0 = only at the end)")
    p.add_argument("--eval-batches", type=int, default=eval_batches)
    p.add_argument("--save-minutes", type=float, default=5.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch compute threads (0: default)")
    p.add_argument("--resume", action="store_true")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_corpus_args(p)
    p.add_argument("--out", help="output folder (default runs/pretrain_<data>)")
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--crop-seconds", type=float, default=2.0)
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate")
    p.add_argument("--grad-clip", type=float, default=10.0, help="HuBERT's gradient norm clip")
    p.add_argument("--dropout", type=float, default=0.1,
                   help="dropout and attention dropout while pre-training (HuBERT's 0.1)")
    p.add_argument("--clusters", type=int, default=100, help="K of the MFCC k-means")
    p.add_argument("--kmeans-frames", type=int, default=100_000,
                   help="frames sampled for k-means")
    p.add_argument("--mask-prob", type=float, default=0.8)
    p.add_argument("--mask-length", type=int, default=10)
    p.add_argument("--targets", default="mfcc-cmn",
                   help="k-means input: " + "; ".join(f"{k}: {v}" for k, v in TARGETS.items()))
    p.add_argument("--targets-from", metavar="CHECKPOINT",
                   help="--targets layer:L: the pre-trained model (e.g. a first iteration's "
                        "tiny_wavlm.pt)")
    p.add_argument("--mix-prob", type=float, default=0.0,
                   help="share of crops with another utterance mixed in (WavLM); 0 = HuBERT")
    add_loop_args(p, eval_every=500, eval_batches=8)
    p.add_argument("--probe", nargs="*", metavar="CHECKPOINT",
                   help="instead of pre-training: the layer-wise SV probe of these checkpoints "
                        "(a tiny_wavlm.pt, a run's checkpoint.pt, any --ssl file), random init "
                        "and MFCC means (table; --out FILE.json writes it)")
    p.add_argument("--probe-seed", type=int, nargs="+", default=[0],
                   help="--probe: the random-init rows, one per seed")
    p.add_argument("--probe-data", default="toy",
                   help="--probe: the SV dataset (data.prepare_data: toy, or vox1 with --data-root)")
    p.add_argument("--probe-centre", type=int, default=CENTRE_PER_SPEAKER, metavar="N",
                   help="--probe: also score after subtracting the mean embedding of N files "
                        "per training speaker (0: raw cosine only)")
    args = p.parse_args(argv)
    if args.probe_centre < 0:
        p.error(f"--probe-centre {args.probe_centre}: files per speaker, 0 or more")
    if args.probe is not None:
        return args                                  # --out stays None unless given
    if args.data == "folder" and not args.data_root:
        p.error("pass --data toy or --data-root <folder of .wav/.flac files>")
    if not 0 < args.mask_prob or args.mask_length < 1:
        p.error("--mask-prob must be > 0 and --mask-length >= 1")
    if not 0 <= args.mix_prob <= 1:
        p.error("--mix-prob must be in [0, 1]")
    if args.clusters < 2:
        p.error("--clusters must be at least 2")
    layer = args.targets.startswith("layer:") and args.targets[6:]
    if args.targets not in ("mfcc-cmn", "mfcc") and not (layer and layer.isdigit()):
        p.error(f"--targets {args.targets}: choose mfcc-cmn, mfcc or layer:L (L a layer number)")
    if bool(layer) != bool(args.targets_from):
        p.error("--targets layer:L and --targets-from CHECKPOINT go together")
    if args.crop_seconds * SAMPLE_RATE < WINDOW + HOP * args.mask_length:
        p.error(f"--crop-seconds must hold more than one mask span "
                f"({(WINDOW + HOP * args.mask_length) / SAMPLE_RATE:g} s)")
    args.out = args.out or os.path.join("runs", f"pretrain_{args.data}")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    return run_probe(args) if args.probe is not None else train(args)


if __name__ == "__main__":
    main()
