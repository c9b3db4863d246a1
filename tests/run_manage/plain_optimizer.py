"""A deliberately wrong dist_strategy plugin used by the weight-guard test.

It replaces ring_allreduce with a plain (non-Horovod) optimizer: every rank then follows its
own gradients - N separate trainings, the silent failure Keras 3 causes with Horovod.
"""

from autocnnp.generator import ActionPlugin


class PlainOptimizer(ActionPlugin):
    type = "dist_strategy"

    def run(self, ctx):
        import tensorflow as tf

        lr = ctx.values["hyperparameters"].initial_lr
        ctx.values["optimizer"] = tf.keras.optimizers.legacy.SGD(learning_rate=lr)
        ctx.values["sync_callbacks"] = []
