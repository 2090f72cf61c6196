"""The grid names its variants with the activation resolver's names and defaults."""

from __future__ import annotations

import pytest

from dsrelu_lightning.errors import ConfigurationError
from dsrelu_lightning.study.run.variants import cv_label, make_variant, plain_variant


def test_a_registered_default_is_left_out_of_the_label() -> None:
    # leaky_relu's 0.01 is the registry's default (it used to be hidden in a lambda).
    assert cv_label("Leaky-ReLU", {"negative_slope": 0.01}) == "leaky_relu"
    assert cv_label("leaky_relu", {"negative_slope": 0.2}) == "leaky_relu_negative_slope0.2"


def test_plain_variants_use_the_canonical_name() -> None:
    assert plain_variant(" DSReLU ").label == "dsrelu"
    assert make_variant("lr", {"activation": "LEAKY-RELU"}, "test").activation == "leaky_relu"


def test_an_unknown_name_says_a_grid_label_would_do_too() -> None:
    with pytest.raises(ConfigurationError) as info:
        plain_variant("swishy")
    assert str(info.value).startswith("unknown activation 'swishy'; valid names: dsrelu, elu")
    assert str(info.value).endswith("(or a label defined under 'variants' in a --grid file)")


def test_bad_variant_arguments_fail_when_the_grid_is_read() -> None:
    with pytest.raises(ConfigurationError, match="initial_angle=95"):
        make_variant(
            "steep", {"activation": "dsrelu", "activation_args": {"initial_angle": 95}}, "t"
        )
