package org.text2data.train;

import static org.assertj.core.api.Assertions.assertThat;

import java.util.Random;

import org.junit.jupiter.api.Test;

/** The saveable generator draws what java.util.Random draws (seeded runs keep their data order), and resumes. */
class SavedRandomTest {

    @Test
    void drawsExactlyWhatJavaUtilRandomDraws() {
        for (long seed : new long[] {0, 1, 7, -3, 0x5DEECE66DL, Long.MAX_VALUE, 123456789012345L}) {
            Random expected = new Random(seed);
            SavedRandom actual = new SavedRandom(seed);
            for (int i = 0; i < 5000; i++) {
                int bound = 1 + (i * 7919) % 3001; // powers of two and not, small and large
                assertThat(actual.nextInt(bound)).as("seed %d draw %d", seed, i).isEqualTo(expected.nextInt(bound));
                assertThat(actual.nextDouble()).isEqualTo(expected.nextDouble());
                assertThat(actual.nextLong()).isEqualTo(expected.nextLong());
            }
        }
    }

    @Test
    void aRestoredStateContinuesTheSequence() {
        SavedRandom a = new SavedRandom(42);
        for (int i = 0; i < 1000; i++) {
            a.nextInt(17);
        }
        SavedRandom b = new SavedRandom(0);
        b.restore(a.state());
        for (int i = 0; i < 1000; i++) {
            assertThat(b.nextDouble()).isEqualTo(a.nextDouble());
        }
    }
}
