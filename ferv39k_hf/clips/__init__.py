"""Stage 3: rows -> clip tensors: frame sampling, decoding, crop geometry, batch memory."""
