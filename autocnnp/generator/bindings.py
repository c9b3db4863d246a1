"""What a plugin programs against: the rank context and what each binding carries.

This is the one description of the contract, read by ``autocnnp describe context``,
``autocnnp describe ACTION`` and docs/plugins.md (a test keeps every binding a built-in
action provides described here). Pure data: importing it imports nothing heavy.
"""

from __future__ import annotations

#: attribute of the ``ctx`` every action and plugin receives -> what it is
CONTEXT: dict[str, str] = {
    "ctx.rank": "this rank's number, 0..size-1 (0 before communication_init has run)",
    "ctx.is_chief": "True on rank 0: write files, print and save only there",
    "ctx.run_dir": "pathlib.Path of the run directory (shared by all ranks on one machine)",
    "ctx.log": "logging.Logger writing to RUN_DIR/logs/rank-K.log",
    "ctx.spec": "the validated config (autocnnp.engine.spec.TrainingSpec), read-only",
    "ctx.resume": "True when the job was started with --resume",
    "ctx.values": "dict of the bindings below: read what you require, store what you provide",
    "ctx.require(name)": "ctx.values[name], or a clear error when no action provided it",
}

#: binding name -> (the action that provides it by default, what the value is)
BINDINGS: dict[str, tuple[str, str]] = {
    "communicator": ("train_env_def.communication_init",
                     "Communicator: rank, size, local_rank, local_size, hostname, is_chief, "
                     "hvd (the horovod.tensorflow.keras module)"),
    "seed": ("train_env_def.seeding", "int: the seed Python, NumPy and TensorFlow were seeded "
                                      "with (the same on every rank)"),
    "device": ("train_env_def.device_placement",
               "DevicePlacement: kind (GPU/CPU), device, gpu_index, intra_op_threads, "
               "inter_op_threads"),
    "memory": ("train_env_def.memory_allocation",
               "MemoryPolicy: growth, soft_placement"),
    "task": ("injection.task_definition",
             "SegmentationTask: classes, num_classes, input_shape (H, W, C), name"),
    "hyperparameters": ("train_strategy_def.hyperparameters",
                        "HyperparameterValues: base_lr, target_lr (scaled for the ranks), "
                        "initial_lr, optimizer, momentum, beta_1, beta_2, weight_decay, "
                        "class_weights, loss_name, loss (the Keras loss), batch_size (per "
                        "rank), global_batch_size, start_epoch, end_epoch, workers"),
    "lr_schedule": ("train_strategy_def.hyperparameters",
                    "LRSchedule of <lr_policy>: schedule(epoch) is the lr at a fractional "
                    "Keras epoch; its scale (1.0) multiplies every value, the one way to "
                    "change the lr that the policy keeps"),
    "model": ("injection.architecture", "the tf.keras.Model (softmax probabilities out)"),
    "dataset": ("injection.dataset",
                "RankDataset, this rank's shard: train and valid (samples read on demand), "
                "train_batches(epoch), valid_batches(), steps_per_epoch, batch_size, "
                "n_train_total, n_valid_total, cache"),
    "optimizer": ("train_strategy_def.dist_strategy",
                  "the optimizer wrapped in hvd.DistributedOptimizer (averages gradients "
                  "over ranks): tf.keras.optimizers.legacy SGD/Adam/RMSprop, or Keras's "
                  "AdamW for adamw"),
    "sync_callbacks": ("train_strategy_def.dist_strategy",
                       "list of Keras callbacks that keep ranks in step: broadcast of rank 0's "
                       "variables, metric averaging, the <lr_policy> schedule"),
    "checkpoints": ("train_strategy_def.checkpoint",
                    "CheckpointSetup: manager (CheckpointManager of RUN_DIR/checkpoints), "
                    "callbacks (rank 0: checkpoints, metrics/epochs.jsonl, TensorBoard)"),
}

#: values in ctx.values that are not bindings (no action owns them)
EXTRA_VALUES: dict[str, str] = {
    "callbacks": "list of extra Keras callbacks passed to fit after every built-in one; "
                 "append yours: ctx.callbacks.append(cb). They run "
                 "on every rank",
}


#: what the bindings carry on the torch engine where it differs (dist_strategy torch_ddp)
TORCH_BINDINGS: dict[str, str] = {
    "communicator": "TorchCommunicator: rank, size, local_rank, local_size, hostname, is_chief, "
                    "backend (gloo or nccl); torch.distributed is initialised",
    "seed": "int: the seed Python, NumPy and torch were seeded with",
    "device": "DevicePlacement: kind (CPU/GPU), device (cpu or cuda:N), gpu_index, thread counts",
    "model": "the torch.nn.Module, unwrapped ((N, C, H, W) in, softmax probabilities "
             "(N, classes, H, W) out)",
    "hyperparameters": "HyperparameterValues as on the Horovod engine; loss is a function of "
                       "torch tensors (y_true (B, H, W), y_pred (B, C, H, W)) -> (B,)",
    "optimizer": "a torch.optim optimizer over the DistributedDataParallel wrapper's "
                 "parameters (SGD, Adam, RMSprop, AdamW with Keras's defaults)",
    "sync_callbacks": "TorchSync: ddp (the DistributedDataParallel wrapper that averages "
                      "gradients), device (the torch.device batches go to)",
    "checkpoints": "CheckpointSetup: manager (TorchCheckpointManager: state dicts in "
                   "RUN_DIR/checkpoints/epoch-NNNNN/state.pt), callbacks (rank 0: "
                   "TensorBoard's epoch scalars; called with Keras's method names before "
                   "the plugins' callbacks)",
}


def describe_binding(name: str, engine: str = "horovod") -> str:
    """``name: what it carries`` for one binding (or a plugin's own value) on ``engine``."""
    if engine == "torch" and name in TORCH_BINDINGS:
        return f"{name}: {TORCH_BINDINGS[name]}"
    if name in BINDINGS:
        return f"{name}: {BINDINGS[name][1]}"
    return f"{name}: (a value of a plugin; not described by autocnnp)"


def context_text() -> str:
    """The contract as ``autocnnp describe context`` prints it."""
    width = max(len(k) for k in CONTEXT)
    lines = ["ctx (the argument of run(self, ctx), on every rank):"]
    lines += [f"  {key:<{width}}  {text}" for key, text in CONTEXT.items()]
    lines += ["", "ctx.values (bindings: provided by one action, required by others):"]
    width = max(len(k) for k in BINDINGS)
    for name, (source, text) in BINDINGS.items():
        lines.append(f"  {name:<{width}}  from {source}: {text}")
    for name, text in EXTRA_VALUES.items():
        lines.append(f"  {name:<{width}}  {text}")
    return "\n".join(lines)
