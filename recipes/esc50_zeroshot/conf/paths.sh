# Where your copy of ESC-50 is (github.com/karolpiczak/ESC-50, the folder that
# holds audio/ and meta/esc50.csv). The only data path this recipe needs.
# ./run.sh --data-root DIR overrides it for one run.
esc50_root=/path/to/ESC-50-master
