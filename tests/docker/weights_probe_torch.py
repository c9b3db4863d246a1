"""Test plugin for the torch swarm tests: every rank records a hash of its weights after each
epoch, the torch engine's twin of ``weights_probe.py``.

``RUN_DIR/weights/rank-K.txt`` gets one line per epoch: ``EPOCH SHA256 LOSS`` (the state dict:
parameters and buffers). DistributedDataParallel keeps them bit-identical across ranks.
``SlowTorchWeightsProbe`` also sleeps after each epoch, so that a rank's container can be
killed in the middle of training.
"""

from autocnnp.generator import ActionPlugin


def _add_probe(ctx, sleep_s):
    import hashlib
    import time

    out = ctx.run_dir / "weights"
    out.mkdir(exist_ok=True)
    path = out / f"rank-{ctx.rank}.txt"

    class _Probe:
        model = None    # the training loop sets it to the torch.nn.Module

        def on_epoch_end(self, epoch, logs=None):
            digest = hashlib.sha256()
            state = self.model.state_dict()
            for key in sorted(state):
                digest.update(state[key].detach().cpu().contiguous().numpy().tobytes())
            with open(path, "a") as handle:
                handle.write(f"{epoch + 1} {digest.hexdigest()} {(logs or {}).get('loss')}\n")
            if sleep_s:
                time.sleep(sleep_s)

    ctx.values.setdefault("callbacks", []).append(_Probe())


class TorchWeightsProbe(ActionPlugin):
    """Hash every rank's weights at the end of each epoch (all ranks, not only rank 0)."""

    type = "checkpoint"

    def run(self, ctx):
        _add_probe(ctx, 0.0)


class SlowTorchWeightsProbe(ActionPlugin):
    """TorchWeightsProbe that sleeps 1.5 s after every epoch."""

    type = "checkpoint"

    def run(self, ctx):
        _add_probe(ctx, 1.5)
