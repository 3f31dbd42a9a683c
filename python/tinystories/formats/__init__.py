"""File formats, read and written without torch: llama2.c model files (:mod:`.llama2c`),
``tokenizer.bin`` (:mod:`.tokenizer_bin`), TinyStories corpora (:mod:`.corpus`), and the
numbers they share with the engine (:mod:`.constants`)."""
