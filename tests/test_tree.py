"""ei_snn_jax.tree: the one helper that names parameter paths (used by Dale's law, the optimizer
masks, checkpoints, probes, E-I Init checks, the NaN guard and the analysis figures)."""

import jax
import jax.numpy as jnp
import pytest

from ei_snn_jax import tree


def _paths(t):
  return [path for path, _ in jax.tree_util.tree_flatten_with_path(t)[0]]


def test_names_of_dict_attribute_and_index_paths():
  params = {"stage1_block0": {"conv1": {"ei": {"w_ee": jnp.ones(2)}}},
            "head": {"dann": {"alpha": jnp.ones(1)}}, "stack": [jnp.ones(1), jnp.ones(1)]}
  names = {tree.path_names(p) for p in _paths(params)}
  assert names == {("stage1_block0", "conv1", "ei", "w_ee"), ("head", "dann", "alpha"),
                   ("stack", "0"), ("stack", "1")}
  by_leaf = {tree.leaf_name(p): tree.layer_path(p[:-1]) for p in _paths(params)}
  assert by_leaf["w_ee"] == "stage1_block0.conv1" and by_leaf["alpha"] == "head"
  # Plain strings work too (probe collections are walked as dicts).
  assert tree.layer_path(("conv0", "ei")) == "conv0" and tree.leaf_name(()) == ""


def test_nnx_trailing_value_is_not_part_of_the_name():
  path = (jax.tree_util.DictKey("conv"), jax.tree_util.DictKey("ei"),
          jax.tree_util.DictKey("w_ei"), jax.tree_util.GetAttrKey("value"))
  assert tree.path_names(path) == ("conv", "ei", "w_ei")
  assert tree.leaf_name(path) == "w_ei"
  # Only NNX's trailing attribute is dropped: a dict key "value" is a name like any other.
  assert tree.leaf_name((jax.tree_util.DictKey("value"),)) == "value"


@pytest.mark.parametrize("wrapper", tree.WRAPPERS)
def test_layer_path_leaves_out_only_the_wrapper_level(wrapper):
  assert tree.layer_path(("stage0_block1", "downsample", wrapper)) == "stage0_block1.downsample"
  assert tree.layer_path(("conv0", "bn_conv", "bn")) == "conv0.bn_conv.bn"
