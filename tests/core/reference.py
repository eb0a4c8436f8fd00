"""Independent numpy references: TFF's optimizer rules and a plain
per-client training loop over unpadded data, for models whose gradients are
written by hand (linear regression and softmax regression).

Nothing here imports jaxclient: these are the numbers jaxclient must match.
"""

import math

import numpy as np


# -- TFF's optimizer update rules (tensorflow_federated/python/learning/
#    optimizers/*.py), one leaf at a time, in float64. ----------------------

class Sgdm:
  def __init__(self, learning_rate, momentum=None):
    self.lr, self.momentum = learning_rate, momentum

  def init(self, w):
    return {'acc': np.zeros_like(w)}

  def step(self, state, w, g):
    if not self.momentum:
      return state, w - self.lr * g
    acc = self.momentum * state['acc'] + g
    return {'acc': acc}, w - self.lr * acc


class Adagrad:
  def __init__(self, learning_rate, initial_preconditioner_value=0.1,
               epsilon=1e-7):
    self.lr, self.p0, self.eps = learning_rate, initial_preconditioner_value, epsilon

  def init(self, w):
    return {'p': np.full_like(w, self.p0)}

  def step(self, state, w, g):
    p = state['p'] + g**2
    return {'p': p}, w - self.lr * g / np.sqrt(p + self.eps)


class RmsProp:
  def __init__(self, learning_rate, decay=0.9, epsilon=1e-7):
    self.lr, self.decay, self.eps = learning_rate, decay, epsilon

  def init(self, w):
    return {'p': np.zeros_like(w)}

  def step(self, state, w, g):
    p = state['p'] + (g**2 - state['p']) * (1 - self.decay)
    return {'p': p}, w - self.lr * g / (np.sqrt(p) + self.eps)


class Adam:
  """TFF's Adam, AdamW (weight_decay) and Yogi (yogi=True)."""

  def __init__(self, learning_rate, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
               weight_decay=None, yogi=False, initial_preconditioner_value=0.0):
    self.lr, self.b1, self.b2, self.eps = learning_rate, beta_1, beta_2, epsilon
    self.wd, self.yogi, self.p0 = weight_decay, yogi, initial_preconditioner_value

  def init(self, w):
    return {'t': 0, 'a': np.zeros_like(w), 'p': np.full_like(w, self.p0)}

  def step(self, state, w, g):
    t = state['t'] + 1
    norm = math.sqrt(1 - self.b2**t) / (1 - self.b1**t)
    a = state['a'] + (g - state['a']) * (1 - self.b1)
    if self.yogi:
      p = state['p'] + (1 - self.b2) * np.sign(g**2 - state['p']) * g**2
    else:
      p = state['p'] + (g**2 - state['p']) * (1 - self.b2)
    direction = norm * a / (np.sqrt(p) + self.eps)
    if self.wd is not None:
      w = w - self.lr * (direction + self.wd * w)
    else:
      w = w - self.lr * direction
    return {'t': t, 'a': a, 'p': p}, w


# -- Models with hand-written gradients. -----------------------------------

def linear_loss_and_grads(params, x, y):
  """MSE of x @ kernel + bias against y: loss and gradients, in float64."""
  err = x @ params['kernel'] + params['bias'] - y
  n, k = err.shape
  loss = np.mean(err**2)
  d = 2.0 * err / (n * k)
  return loss, {'kernel': x.T @ d, 'bias': d.sum(axis=0)}


def softmax_loss_and_grads(params, x, y):
  """Sparse softmax cross-entropy of x @ kernel + bias: loss and gradients."""
  logits = x @ params['kernel'] + params['bias']
  logits = logits - logits.max(axis=1, keepdims=True)
  probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
  n = x.shape[0]
  loss = -np.mean(np.log(probs[np.arange(n), y]))
  d = probs.copy()
  d[np.arange(n), y] -= 1.0
  d /= n
  return loss, {'kernel': x.T @ d, 'bias': d.sum(axis=0)}


def train_client(params, x, y, batch_size, num_epochs, optimizer,
                 loss_and_grads):
  """The plain loop: `repeat(num_epochs).batch(batch_size)`, one step a batch.

  Returns (update, loss_sum, num_examples, num_batches): update is initial
  minus final params, loss_sum the example-weighted sum of batch losses.
  """
  params = {k: np.asarray(v, np.float64) for k, v in params.items()}
  initial = {k: v.copy() for k, v in params.items()}
  state = {k: optimizer.init(v) for k, v in params.items()}
  order = np.tile(np.arange(len(x)), num_epochs)
  loss_sum, num_batches = 0.0, 0
  for start in range(0, len(order), batch_size):
    idx = order[start:start + batch_size]
    loss, grads = loss_and_grads(params, x[idx].astype(np.float64), y[idx])
    for k in params:
      state[k], params[k] = optimizer.step(state[k], params[k], grads[k])
    loss_sum += loss * len(idx)
    num_batches += 1
  update = {k: initial[k] - params[k] for k in params}
  return update, loss_sum, len(order), num_batches
