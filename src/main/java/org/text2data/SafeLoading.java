package org.text2data;

/** Set-up that must happen before the first bytedeco class loads (see {@link LibTorch}). */
final class SafeLoading {
    private SafeLoading() {
    }

    static void apply() {
        // filled in once the first-run crash is understood
    }
}
