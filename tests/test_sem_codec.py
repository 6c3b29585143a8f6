"""The SEM bit codec shared by nnQC_predict (writer) and nnQC_evaluate (reader)."""
import numpy as np
import pytest

from nnqc.metrics.sem import decode_sem_bits, encode_sem_bits


@pytest.mark.parametrize("num_regions, dtype", [(1, np.uint8), (8, np.uint8), (9, np.uint16), (16, np.uint16)])
def test_round_trip_and_bit_values(num_regions, dtype):
    sem = np.random.default_rng(num_regions).random((num_regions, 3, 4, 5)) > 0.5
    encoded = encode_sem_bits(sem)
    assert encoded.dtype == dtype and encoded.shape == (3, 4, 5)
    expected = sum(sem[c].astype(np.int64) * 2 ** c for c in range(num_regions))
    np.testing.assert_array_equal(encoded, expected)
    np.testing.assert_array_equal(decode_sem_bits(encoded, num_regions), sem)


def test_bad_maps_are_refused():
    with pytest.raises(ValueError, match="at most 16 regions"):
        encode_sem_bits(np.zeros((17, 2, 2), dtype=bool))
    with pytest.raises(TypeError, match="integers"):
        decode_sem_bits(np.zeros((2, 2), dtype=np.float32), 2)
    with pytest.raises(ValueError, match="do not encode 2 region"):
        decode_sem_bits(np.array([[-1, 0]], dtype=np.int16), 2)
    assert decode_sem_bits(np.zeros((0, 3), dtype=np.uint8), 2).shape == (2, 0, 3)
