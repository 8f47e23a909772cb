"""The data the chapters train on: verified files shipped in the repository's ``data/`` folder
(:mod:`.files`), image datasets (:mod:`.image_data`) and the text corpora with their tokenisers (:mod:`.text`)."""
