"""Audio as images: log-mel spectrogram maths and the window transform a model records and replays."""
