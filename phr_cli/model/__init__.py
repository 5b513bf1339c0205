"""The recommendation model: the paper's network, and the score parts the default model adds.

- `config`: the model's options (network, evidence, item IDs, the default model), without torch.
- `network`: GCN-PHR as the paper's Eq. 1-10 define it (`NetworkConfig`, `GCNPHR`).
- `items`: the video vector v_k (each modality standardised; a learned vector where missing).
- `edges`: the training graph as the network reads it (triples, attention groups, each side's edges).
- `aggregate`: sparse products that sum each side's messages over a fixed structure.
- `neighbours`: content similarity between items (the vectors and their nearest neighbours).
- `evidence`: the count evidence (the user's, the item's and the neighbours' hashtags, recency).
- `pitf`: PITF (Rendle & Schmidt-Thieme 2010), fitted with BPR.
- `factors`: a fitted PITF's factors as a score part.
- `hashtag_text`: a hashtag's words, embedded and mapped to a graph representation (hashtags unseen in training).
- `phr`: the default model: the network's score beside the other parts (`ModelConfig`, `PHRModel`).
"""
