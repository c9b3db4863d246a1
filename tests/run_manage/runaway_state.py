"""Shared by runaway_loss.py and runaway_plugin.py (the divergence test): the factor the loss
is multiplied by. Not a test module."""

import tensorflow as tf

SCALE = tf.Variable(1.0, trainable=False, name="runaway_scale")
