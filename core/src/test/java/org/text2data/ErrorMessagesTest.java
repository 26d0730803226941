package org.text2data;

import static org.assertj.core.api.Assertions.assertThat;

import org.junit.jupiter.api.Test;

/** libtorch's messages reduced to the line that names the cause. */
class ErrorMessagesTest {

    @Test
    void theCppStackTraceIsDropped() {
        String m = "Found dtype Long but expected Double\nException raised from compute_types at /x/TensorIterator.cpp:438 "
                + "(most recent call first):\nframe #0: c10::Error::Error(...) + 0xac (0x7f in libc10.so)\nframe #1: ...\n";
        assertThat(ErrorMessages.clean(m)).isEqualTo("Found dtype Long but expected Double");
    }

    @Test
    void theTorchScriptTracebackGivesWayToItsCause() {
        String m = """
                The following operation failed in the TorchScript interpreter.
                Traceback of TorchScript, serialized code (most recent call last):
                  File "code/__torch__.py", line 23, in forward
                    _1 = (inp).forward(x, )
                          ~~~~~~~~~~~~ <--- HERE
                Traceback of TorchScript, original code (most recent call last):
                  File "make_fixtures.py", line 88, in forward
                        z = F.silu(self.inp(x) + self.cin(c))
                RuntimeError: mat1 and mat2 shapes cannot be multiplied (16x3 and 4x8)
                """;
        assertThat(ErrorMessages.clean(m)).isEqualTo("in the model's TorchScript code: mat1 and mat2 shapes cannot be "
                + "multiplied (16x3 and 4x8)");
    }

    @Test
    void otherMessagesBecomeOneLine() {
        assertThat(ErrorMessages.clean("first\n  second\n")).isEqualTo("first second");
        assertThat(ErrorMessages.clean(null)).isEqualTo("(no message)");
        assertThat(ErrorMessages.of(new NullPointerException())).isEqualTo("NullPointerException");
    }
}
