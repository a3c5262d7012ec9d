# Where your copies of AudioCaps and Clotho v2.1 are: the only data paths this
# recipe needs. ./run.sh --audiocaps-root DIR (etc.) overrides them for one run.

# AudioCaps (github.com/cdjkim/audiocaps, dataset/): train.csv val.csv test.csv
audiocaps_root=/path/to/audiocaps/dataset
# the clips you downloaded from YouTube (default: audiocaps_root); by default
# {split}/{youtube_id}.wav, {split}/Y{youtube_id}.wav, {youtube_id}.wav,
# {audiocap_id}.wav (and .flac) are tried; set a pattern of your own if needed,
# e.g. '{split}/{youtube_id}_{start_time}.flac'
audiocaps_audio_dir=""
audiocaps_filename_pattern=""

# Clotho v2.1 (Zenodo 4783391, unpacked): clotho_captions_{development,validation,evaluation}.csv
# and the development/ validation/ evaluation/ audio folders
clotho_root=/path/to/clotho
