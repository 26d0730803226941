package org.text2data;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import org.bytedeco.pytorch.LinearImpl;
import org.bytedeco.pytorch.Module;
import org.bytedeco.pytorch.StringTensorDict;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.Test;

/** How a bytedeco {@link Module}'s parameters are taken: names, frozen ones left out, owning handles. */
class ModuleParametersTest {

    static {
        LibTorch.ensureLoaded();
    }

    @Test
    void aModulesNamedParametersThatRequireGradInOrder() {
        Module net = new Module();
        LinearImpl fc = net.register_module("fc", new LinearImpl(3, 2));
        net.register_parameter("frozen", torch.ones(2), false);
        try (Constraint opt = new Constraint(net, OptimizerSpec.sgd(0.1))) {
            assertThat(opt.parameterNames()).containsExactly("fc.weight", "fc.bias");
            // the same tensors as the module's, not copies
            assertThat(opt.parameters().get(0).data_ptr().address()).isEqualTo(fc.weight().data_ptr().address());
        }
        try (StringTensorDict dict = net.named_parameters();
             Constraint opt = new Constraint(dict, OptimizerSpec.sgd(0.1))) {
            assertThat(opt.parameterNames()).containsExactly("fc.weight", "fc.bias");
        }
    }

    @Test
    void theConstraintsHandlesOutliveTheCallersAndLeaveTheParametersAlive() {
        Module net = new Module();
        LinearImpl fc = net.register_module("fc", new LinearImpl(3, 2));
        Tensor before = fc.weight().detach().clone();
        try (Constraint opt = new Constraint(net.parameters(), OptimizerSpec.sgd(0.5))) {
            Tensor x = torch.randn(4, 3);
            try (StepResult r = Text2Data.runStep(opt, 100.0, (d, c) -> fc.forward(c == null ? d : d.add(c)),
                    x, x, torch.zeros(4, 2), Loss.MSE)) {
                assertThat(r.condLoss()).isFinite();
            }
        }
        // closing the constraint released its handles only: the module's weight is alive and was stepped
        assertThat(torch.equal(fc.weight().detach(), before)).isFalse();
        assertThat(fc.weight().requires_grad()).isTrue();
    }

    @Test
    void aModuleWithEveryParameterFrozenIsRefusedWithAClearMessage() {
        Module net = new Module();
        LinearImpl fc = net.register_module("fc", new LinearImpl(3, 2));
        fc.weight().requires_grad_(false);
        fc.bias().requires_grad_(false);
        assertThatThrownBy(() -> new Constraint(net, OptimizerSpec.sgd(0.1)))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("all 2 have requires_grad = false");
        assertThatThrownBy(() -> new Constraint((Module) null, OptimizerSpec.sgd(0.1)))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("module is null");
    }
}
