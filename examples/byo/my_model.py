"""A model of your own: stock Flax layers, no metajax imports, no "body"/"head" names."""
import flax.linen as nn


class SmallNet(nn.Module):
    num_outputs: int
    width: int = 16

    @nn.compact
    def __call__(self, x, train: bool = False):
        for _ in range(2):
            x = nn.Conv(self.width, (3, 3))(x)
            x = nn.BatchNorm(use_running_average=not train)(x)
            x = nn.relu(x)
            x = nn.max_pool(x, (2, 2), (2, 2))
        x = nn.Dropout(0.1, deterministic=not train)(x.mean(axis=(1, 2)))
        x = nn.relu(nn.Dense(32)(x))
        return nn.Dense(self.num_outputs)(x)  # the last Dense: metajax's default head


def small_net(num_outputs, hidden=None):
    """metajax calls factory(num_outputs, **options) and expects a Flax module."""
    return SmallNet(num_outputs, width=hidden or 16)
