package org.text2data.demo;

import java.util.HashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;

import org.bytedeco.pytorch.Tensor;

/**
 * A deterministic bag-of-words text encoder: a description becomes the unit-length vector of its word
 * counts over a fixed vocabulary. The model learns what the words mean (synonyms included) from the
 * few labelled pairs; no pretrained language model, nothing downloaded.
 */
public final class TextEncoder {
    private final List<String> vocabulary;
    private final Map<String, Integer> index = new HashMap<>();

    public TextEncoder(List<String> vocabulary) {
        this.vocabulary = List.copyOf(vocabulary);
        for (int i = 0; i < vocabulary.size(); i++) {
            index.put(vocabulary.get(i), i);
        }
    }

    public int dim() {
        return vocabulary.size();
    }

    public float[] encode(String text) {
        float[] v = new float[dim()];
        for (String w : text.toLowerCase(Locale.ROOT).split("[^a-z-]+")) {
            Integer i = index.get(w);
            if (i != null) {
                v[i] += 1;
            }
        }
        double norm = 0;
        for (float x : v) {
            norm += x * x;
        }
        if (norm > 0) {
            float inv = (float) (1 / Math.sqrt(norm));
            for (int i = 0; i < v.length; i++) {
                v[i] *= inv;
            }
        }
        return v;
    }

    /** {@code [texts.size(), dim]} float32. */
    public Tensor encode(List<String> texts) {
        float[] all = new float[texts.size() * dim()];
        for (int i = 0; i < texts.size(); i++) {
            System.arraycopy(encode(texts.get(i)), 0, all, i * dim(), dim());
        }
        return Tensor.create(all, texts.size(), dim());
    }
}
