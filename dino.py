"""
Utterance-level self-supervised pre-training by self-distillation (DINO), at toy scale:
a second objective beside pretrain.py's masked prediction, for the question of issue 21
(docs/results.md): does the pre-trained model hold more about *who speaks* than a random
one, so that pruning it beats training a small model?

DINO (Caron et al. 2021, "Emerging Properties in Self-Supervised Vision Transformers",
arXiv 2104.14294, Sec. 3.1 and Alg. 1), as the speaker toolkits use it without labels
(Chen et al. 2022, "A comprehensive study on self-supervised distillation for speaker
representation learning", arXiv 2210.15936; wespeaker's examples/voxceleb/v3/dino):

1. Views. Each utterance gives 2 "global" crops and a few shorter "local" ones, at random
   places, each through its own random channel (random_channel: EQ, noise, gain). Two
   views of one utterance then share the voice, and neither the words (other places) nor
   the channel (drawn per view): what the network can agree on across them is the voice.
2. Student and teacher: the same encoder + projection head. The student learns by
   gradient; the teacher is an exponential moving average of the student's weights
   (momentum 0.996 rising to 1 on a cosine), and gets no gradient.
3. Each view -> the time average of the encoder's last layer (B, E) -> the head: an MLP
   down to a 64-dim bottleneck, L2-normalised, then cosine similarity with K unit-norm
   prototypes -> K logits.
4. The teacher sees only the global views; its logits are centred (a running mean over
   batches is subtracted) and sharpened (temperature 0.04 -> 0.07): centring alone would
   make the output uniform, sharpening alone would make one prototype win everything;
   together they avoid both collapses. The student (temperature 0.1) must predict the
   teacher's distribution of *another* view:
       L = mean over (teacher view g, student view v != g) of
           H(softmax((t_g - c) / T_t), softmax(s_v / T_s))
How it differs from WavLM's (and HuBERT's) objective: masked prediction asks for the
content of each 20-ms frame (a cluster of sounds) from its context; DINO asks for one
vector per utterance that stays the same across time, place and channel. The first
learns what is said, the second who says it, which is what speaker verification needs.

    python dino.py --data toy                                  # writes runs/dino_toy/tiny_wavlm.pt
    python pretrain.py --probe runs/dino_toy/tiny_wavlm.pt     # judge it with the probe
    python train.py --data toy --ssl runs/dino_toy/tiny_wavlm.pt --target 0.7

Outputs in --out (default runs/dino_<data>): tiny_wavlm.pt (the encoder in the unilm
layout; its mask_emb, which DINO never uses, is zeros), checkpoint.pt (--resume),
log.jsonl (loss, entropies, lr, momentum per step; held-out loss), report.json.
"""

import argparse
import copy
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import checkpoints
import data
import devices
import pretrain
import pretrained
import run_folder
from checkpoints import atomic_torch_save, load_state_exactly, read_checkpoint
from wavlm_masked import MaskedWavLM, WavLMConfig

SAMPLE_RATE = data.SAMPLE_RATE
BOTTLENECK = 64                 # the head's output before the prototypes (DINO: 256)
HIDDEN = 512                    # the head's MLP width (DINO: 2048; our encoder is 128 wide)
STUDENT_TEMP = 0.1              # DINO's and wespeaker's values
TEACHER_TEMP = (0.04, 0.07)     # warmed up linearly over the first 20 % of the steps
CENTER_MOMENTUM = 0.9


# ------------------------------------------------------------------------------ views
def random_channel(wave: np.ndarray, rng) -> np.ndarray:
    """A view's own recording channel: a smooth random EQ in log-frequency (a tilt of
    N(0, 2) dB per octave and four cosine ripples of N(0, 3) dB), white noise at an SNR
    uniform in 5-25 dB, and a gain uniform in -6..+6 dB. Stronger than the toy corpus's
    sessions differ (toy_corpus.CHANNELS), so that a view's channel says nothing about
    the other view's. wave (S,) float32 -> (S,) float32."""
    n = len(wave)
    f = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    octaves = np.log2(np.maximum(f, 50) / 1000)                  # re 1 kHz; 50 Hz..8 kHz
    u = (octaves + 4.3) / 7.3                                    # -> 0..1
    eq_db = rng.normal(0, 2) * octaves
    for j in range(1, 5):
        eq_db += rng.normal(0, 3) * np.cos(j * np.pi * u + rng.uniform(0, 2 * np.pi))
    y = np.fft.irfft(np.fft.rfft(wave) * 10 ** (eq_db / 20), n)
    noise = rng.normal(0, 1, n)
    snr_db = rng.uniform(5, 25)
    y = y + noise * math.sqrt(np.mean(y ** 2) / 10 ** (snr_db / 10) + 1e-12)
    return (y * 10 ** (rng.uniform(-6, 6) / 20)).astype(np.float32)


class MultiCrops:
    """Views of random utterances: (globals (2, B, S_g), locals (V_l, B, S_l)). Each step's
    utterances, places and channels come from numpy default_rng([seed, step]), so a
    resumed run draws what the uninterrupted one would. A file shorter than a crop is
    tiled (data.read_random_window), as in training."""

    def __init__(self, paths, global_seconds, local_seconds, local_crops):
        self.paths = paths
        self.n_global = int(round(global_seconds * SAMPLE_RATE))
        self.n_local = int(round(local_seconds * SAMPLE_RATE))
        self.local_crops = local_crops

    def views(self, batch_size, rng):
        globals_, locals_ = [[], []], [[] for _ in range(self.local_crops)]
        for i in rng.integers(0, len(self.paths), batch_size):
            for view, n in [(v, self.n_global) for v in globals_] + \
                           [(v, self.n_local) for v in locals_]:
                crop = data.read_random_window(self.paths[i], n, rng).numpy()
                view.append(torch.from_numpy(random_channel(crop, rng)))
        stack = lambda views: torch.stack([torch.stack(v) for v in views])
        return stack(globals_), (stack(locals_) if locals_ else None)


# ------------------------------------------------------------------------------ model
class DinoHead(nn.Module):
    """Pooled embedding (B, E) -> K logits: a 3-layer MLP to BOTTLENECK dims, L2-normalised,
    then the cosine with K prototypes of unit norm (DINO's weight-normalised last layer
    with its gain fixed at 1)."""

    def __init__(self, in_dim: int, prototypes: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_dim, HIDDEN), nn.GELU(), nn.Linear(HIDDEN, HIDDEN),
                                 nn.GELU(), nn.Linear(HIDDEN, BOTTLENECK))
        self.prototypes = nn.Parameter(torch.randn(prototypes, BOTTLENECK))

    def forward(self, x):
        z = F.normalize(self.mlp(x), dim=-1)                                   # (B, D)
        return z @ F.normalize(self.prototypes, dim=-1).T                       # (B, K)


class Dino(nn.Module):
    """Student (encoder + head, trained) and teacher (their moving average), and the
    centre of the teacher's logits."""

    def __init__(self, config: WavLMConfig, prototypes: int):
        super().__init__()
        self.student = nn.ModuleDict(dict(encoder=MaskedWavLM(config),
                                          head=DinoHead(config.hidden_size, prototypes)))
        self.teacher = copy.deepcopy(self.student).requires_grad_(False)
        self.register_buffer("center", torch.zeros(prototypes))

    @staticmethod
    def logits(net, views):
        """views (V, B, S) -> (V, B, K): each view's last layer, averaged over time."""
        V, B, S = views.shape
        hidden, _ = net["encoder"](views.reshape(V * B, S))
        return net["head"](hidden[-1].mean(1)).reshape(V, B, -1)

    def forward(self, globals_, locals_, teacher_temp):
        """-> (loss, the student's and the teacher's mean entropy in nats). Updates the
        centre with this batch's teacher logits."""
        student = self.logits(self.student, globals_)                           # (2, B, K)
        if locals_ is not None:
            student = torch.cat([student, self.logits(self.student, locals_)])  # (V, B, K)
        with torch.no_grad():
            self.teacher.eval()                          # targets without dropout
            teacher = self.logits(self.teacher, globals_)                       # (2, B, K)
        loss, targets, log_p = dino_loss(student, teacher, self.center, teacher_temp)
        with torch.no_grad():
            self.center.mul_(CENTER_MOMENTUM).add_((1 - CENTER_MOMENTUM) * teacher.mean((0, 1)))
        entropy = lambda p, logp: -(p * logp).sum(-1).mean().item()
        return (loss, entropy(log_p.detach().exp(), log_p.detach()),
                entropy(targets, torch.log(targets.clamp_min(1e-30))))

    @torch.no_grad()
    def update_teacher(self, momentum):
        for t, s in zip(self.teacher.parameters(), self.student.parameters()):
            t.mul_(momentum).add_((1 - momentum) * s.detach())


def dino_loss(student, teacher, center, teacher_temp):
    """student (V, B, K) logits of every view, the 2 global ones first; teacher (2, B, K)
    logits of the global views -> (the mean cross-entropy over the pairs (g, v != g),
    the teacher's targets (2, B, K), the student's log-probabilities (V, B, K))."""
    targets = F.softmax((teacher - center) / teacher_temp, dim=-1).detach()   # centre, sharpen
    log_p = F.log_softmax(student / STUDENT_TEMP, dim=-1)
    terms = [-(targets[g] * log_p[v]).sum(-1).mean()
             for g in range(len(targets)) for v in range(len(log_p)) if v != g]
    return sum(terms) / len(terms), targets, log_p


def teacher_temperature(step, total):
    warm = max(1, int(0.2 * total))
    return TEACHER_TEMP[0] + (TEACHER_TEMP[1] - TEACHER_TEMP[0]) * min(1.0, step / warm)


def teacher_momentum(step, total, start=0.996):
    """DINO's cosine schedule from `start` to 1: the teacher moves less as training ends."""
    return 1 - (1 - start) * (math.cos(math.pi * step / total) + 1) / 2


# ------------------------------------------------------------------------------ loop
def dino_step(model, optimizer, crops, step, args) -> dict:
    """One step: the student descends the loss, then the teacher follows it. The views
    come from (seed, step) alone, so a resumed run draws what the uninterrupted one would."""
    rng = np.random.default_rng([args.seed, step])
    globals_, locals_ = crops.views(args.batch_size, rng)
    lr = pretrain.lr_at(step, args.steps, args.lr)
    for group in optimizer.param_groups:
        group["lr"] = lr
    loss, h_student, h_teacher = model(globals_, locals_, teacher_temperature(step, args.steps))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if step < args.freeze_prototypes:        # DINO: the prototypes wait while the rest settles
        model.student["head"].prototypes.grad = None
    nn.utils.clip_grad_norm_(model.student.parameters(), args.grad_clip)
    optimizer.step()
    momentum = teacher_momentum(step, args.steps)
    model.update_teacher(momentum)
    return dict(step=step + 1, loss=loss.item(), student_entropy=h_student,
                teacher_entropy=h_teacher, lr=lr, momentum=momentum)


@torch.no_grad()
def heldout_loss(model, crops, args) -> float:
    """The loss on held-out voices with fixed views, the centre left as it is."""
    rng, center = np.random.default_rng([args.seed, 10 ** 9]), model.center.clone()
    model.student.eval()
    losses = [model(*crops.views(args.batch_size, rng), TEACHER_TEMP[1])[0].item()
              for _ in range(args.eval_batches)]
    model.student.train()
    model.center.copy_(center)
    return float(np.mean(losses))


def train(args):
    stop, out = devices.StopRequest(), args.out
    ckpt_path, log_path = os.path.join(out, "checkpoint.pt"), os.path.join(out, "log.jsonl")
    run_folder.check_out_folder(out, args.resume, re_export=True)
    try:
        state = read_checkpoint(ckpt_path) if args.resume else None
        root, paths, info = pretrain.corpus_files(args)
        for path in paths:                       # a damaged file is named now, not mid-run
            data.audio_info(path)
    except (OSError, ValueError, RuntimeError) as e:
        run_folder.fail(e)
    held = max(1, len(paths) // 20)            # the first 5 % of the files: held-out loss
    if state is not None and state["files_hash"] != pretrain.files_hash(root, paths):
        run_folder.fail(f"{out} was pre-trained on another set of files; resume with the "
                        f"same data or choose another --out")
    views = lambda files: MultiCrops(files, args.global_seconds, args.local_seconds,
                                     args.local_crops)
    heldout, train_set = views(paths[:held]), views(paths[held:])
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(args.seed)
    model = Dino(WavLMConfig.tiny(dropout=args.dropout, attention_dropout=args.dropout),
                 args.prototypes)
    optimizer = torch.optim.AdamW(model.student.parameters(), lr=args.lr, weight_decay=0.04)
    step, seconds_before = 0, 0.0
    if state is not None:
        load_state_exactly(model, state["model"], ckpt_path)
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])                           # dropout's draws
        step, seconds_before = state["step"], state["seconds"]
        run_folder.truncate_log(log_path, step)
        print(f"resuming at step {step} of {args.steps}")
    else:
        run_folder.start_fresh(out)

    def save(step, seconds):
        atomic_torch_save(dict(step=step, model=model.state_dict(),
                               optimizer=optimizer.state_dict(),
                               torch_rng=torch.get_rng_state(),
                               files_hash=pretrain.files_hash(root, paths), seconds=seconds,
                               args=run_folder.plain_values(vars(args))), ckpt_path)

    print(f"DINO pre-training of a tiny WavLM ({model.student['encoder'].num_params():,} "
          f"parameters) on {len(paths) - held} files, {held} held out", flush=True)
    model.train()
    pretrain.run_steps(
        stop, step, seconds_before, args, log_path, save,
        take_step=lambda step: dino_step(model, optimizer, train_set, step, args),
        evaluate=lambda: dict(heldout_loss=heldout_loss(model, heldout, args)),
        describe=lambda r: f"held-out loss {r['heldout_loss']:.3f}, entropy student "
                           f"{r['student_entropy']:.2f} teacher {r['teacher_entropy']:.2f} "
                           f"(uniform: {math.log(args.prototypes):.2f})")
    return write_outputs(model, args, log_path, info, len(paths), held)


def write_outputs(model, args, log_path, info, files, held):
    """tiny_wavlm.pt: the *teacher's* encoder (DINO evaluates the teacher: the average
    of the student's last weights, it is the better of the two), report.json."""
    encoder = model.teacher["encoder"]
    export = pretrained.unilm_checkpoint(encoder, torch.zeros(encoder.config.hidden_size),
                                         objective="dino", prototypes=args.prototypes)
    atomic_torch_save(export, os.path.join(args.out, "tiny_wavlm.pt"))
    rows = [json.loads(line) for line in open(log_path)]
    last = [r for r in rows if "heldout_loss" in r][-1]
    report = dict(data=info, files=files, heldout_files=held, steps=args.steps,
                  parameters=encoder.num_params(), final=dict(
                      loss=float(np.mean([r["loss"] for r in rows[-100:]])),
                      heldout_loss=last["heldout_loss"],
                      student_entropy=rows[-1]["student_entropy"],
                      teacher_entropy=rows[-1]["teacher_entropy"]),
                  train_seconds=rows[-1]["seconds"],
                  heldout_curve=[dict(step=r["step"], loss=round(r["heldout_loss"], 4))
                                 for r in rows if "heldout_loss" in r],
                  command="python dino.py " + " ".join(a for a in sys.argv[1:] if a != "--resume"),
                  args=vars(args))
    checkpoints.write_json(os.path.join(args.out, "report.json"), report)
    print(f"wrote {os.path.join(args.out, 'tiny_wavlm.pt')} (train.py --ssl and "
          f"pretrain.py --probe read it); report in {os.path.join(args.out, 'report.json')}")
    return report


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    pretrain.add_corpus_args(p)
    p.add_argument("--out", help="output folder (default runs/dino_<data>)")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=16, help="utterances per step")
    p.add_argument("--global-seconds", type=float, default=1.5,
                   help="the 2 global views (the teacher's and the student's)")
    p.add_argument("--local-seconds", type=float, default=1.0,
                   help="the local views (the student's only)")
    p.add_argument("--local-crops", type=int, default=2)
    p.add_argument("--prototypes", type=int, default=1024, help="K, the head's outputs")
    p.add_argument("--lr", type=float, default=5e-4, help="peak learning rate")
    p.add_argument("--grad-clip", type=float, default=3.0, help="wespeaker's DINO clip")
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--freeze-prototypes", type=int, default=100,
                   help="steps before the prototypes learn (DINO: the first epoch)")
    pretrain.add_loop_args(p, eval_every=250, eval_batches=4)
    args = p.parse_args(argv)
    if args.data == "folder" and not args.data_root:
        p.error("pass --data toy or --data-root <folder of .wav/.flac files>")
    if min(args.global_seconds, args.local_seconds) < 0.5 or args.local_crops < 0:
        p.error("--global-seconds and --local-seconds must be at least 0.5, "
                "--local-crops at least 0")
    if args.prototypes < 2 or args.steps < 1:
        p.error("--prototypes must be at least 2 and --steps at least 1")
    args.out = args.out or os.path.join("runs", f"dino_{args.data}")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    return train(args)


if __name__ == "__main__":
    main()
