# Where your copy of UrbanSound8K is (urbansounddataset.weebly.com): the
# UrbanSound8K folder (audio/fold1..fold10, metadata/UrbanSound8K.csv) or the
# folder that contains it. The only data path this recipe needs.
# ./run.sh --data-root DIR overrides it for one run.
urbansound8k_root=/path/to/UrbanSound8K
