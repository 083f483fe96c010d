//! Print the measured peak f32 rate of one core.
fn main() {
    let cpu = resnet_kernels::Cpu::detect();
    println!(
        "{:?} peak {:.1} GFLOP/s",
        cpu.level(),
        resnet_kernels::fast::measure_peak_gflops(cpu, 500)
    );
    let s = resnet_kernels::Cpu::scalar();
    println!(
        "scalar peak {:.1} GFLOP/s",
        resnet_kernels::fast::measure_peak_gflops(s, 300)
    );
}
