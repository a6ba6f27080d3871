//! The operations, written from docs/tdx-abi.md: types (sections 4, 5),
//! the transport contract (7.1), VP.RD/WR (7.3-7.5), the page loops
//! (7.9-7.13) and the private-register copy (7.16).

use bitfield_struct::bitfield;

use crate::sys::{hcltdx_vmcs_field_at, hcltdx_vmcs_field_count, now_ns, MshvTdcall};

// ---- types ---------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum GuestVtl {
    Vtl0 = 0,
    Vtl1 = 1,
}

/// TDCALL status: details in the low half, the result code in the high half.
#[bitfield(u64)]
pub struct TdCallResult {
    pub details: u32,
    pub code: u32,
}

/// RDX of TDG.VP.RD / TDG.VP.WR (spec 4.1).
#[bitfield(u64)]
pub struct TdxExtendedFieldCode {
    #[bits(24)]
    pub field_code: u32,
    #[bits(8)]
    __: u8,
    #[bits(2)]
    pub field_size: u8,
    #[bits(4)]
    pub last_element: u8,
    #[bits(9)]
    pub last_field: u16,
    #[bits(3)]
    __: u8,
    pub increment_size: bool,
    pub write_mask_valid: bool,
    #[bits(3)]
    pub context_code: u8,
    #[bits(1)]
    __: u8,
    #[bits(6)]
    pub class_code: u8,
    #[bits(1)]
    __: u8,
    pub non_arch: bool,
}

/// RCX of TDG.MEM.PAGE.ACCEPT and of ATTR.WR (same layout).
#[bitfield(u64)]
pub struct TdgMemPageAcceptRcx {
    #[bits(3)]
    pub level: u8,
    #[bits(9)]
    __: u16,
    #[bits(40)]
    pub gpa_page_number: u64,
    #[bits(12)]
    __: u16,
}

pub type TdgMemPageAttrWriteRcx = TdgMemPageAcceptRcx;

/// GPA_ATTR: four 16-bit per-VM attribute slots.
#[bitfield(u64)]
pub struct TdgMemPageGpaAttr {
    pub l1: u16,
    pub l2_vm1: u16,
    pub l2_vm2: u16,
    pub l2_vm3: u16,
}

/// R8 of ATTR.WR: per-VM masks (no mask for L1).
#[bitfield(u64)]
pub struct TdgMemPageAttrWriteR8 {
    pub reserved: u16,
    pub l2_vm1: u16,
    pub l2_vm2: u16,
    pub l2_vm3: u16,
}

/// TDG.VP.ENTER RCX, kept per VTL in the private registers.
#[bitfield(u64)]
pub struct TdxVmFlags {
    #[bits(2)]
    pub invd_translations: u8,
    #[bits(50)]
    __: u64,
    #[bits(2)]
    pub vm_index: u8,
    #[bits(10)]
    __: u16,
}

pub const GPA_VM_ATTRIBUTES_FULL_ACCESS: u16 = 0x800F;
pub const GPA_VM_ATTRIBUTES_MASK_ALL_CHANGED: u16 = 0x000F;

const LEAF_VP_VMCALL: u64 = 0;
const LEAF_MEM_PAGE_ACCEPT: u64 = 6;
const LEAF_VP_RD: u64 = 9;
const LEAF_VP_WR: u64 = 10;
const LEAF_MEM_PAGE_ATTR_WR: u64 = 24;

const CLASS_VMCS_1: u8 = 36;
const CLASS_VMCS_2: u8 = 44;
const CONTEXT_TD_VCPU: u8 = 2;

const SUCCESS: u32 = 0;
const OPERAND_BUSY: u32 = 0x8000_0200;
const OPERAND_INVALID: u32 = 0xC000_0100;
const PAGE_ALREADY_ACCEPTED: u32 = 0x0000_0B0A;
const PAGE_SIZE_MISMATCH: u32 = 0xC000_0B0B;

const LEVEL_4K: u8 = 0;
const LEVEL_2M: u8 = 1;
const SIZE_2M: u64 = 0x20_0000;
const SIZE_4K: u64 = 0x1000;

/// A VMCS field: its Intel encoding (bits 13-14 give the width).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct VmcsField(pub u32);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum FieldWidth {
    Width16,
    Width64,
    Width32,
    WidthNatural,
}

impl VmcsField {
    pub const VMX_VMCS_GUEST_CR3: VmcsField = VmcsField(0x6802);

    #[inline]
    pub fn field_width(self) -> FieldWidth {
        match (self.0 >> 13) & 3 {
            0 => FieldWidth::Width16,
            1 => FieldWidth::Width64,
            2 => FieldWidth::Width32,
            _ => FieldWidth::WidthNatural,
        }
    }
}

/// The catalogue's readable 64-bit and natural-width fields, in catalogue
/// order (the list the Python suites take from `VmcsField.catalogue()`).
pub fn readable_64bit_fields() -> Vec<VmcsField> {
    let n = unsafe { hcltdx_vmcs_field_count() };
    (0..n)
        .map(|i| unsafe { &*hcltdx_vmcs_field_at(i) })
        .filter(|d| d.read_mask != 0)
        .map(|d| VmcsField(d.encoding))
        .filter(|f| matches!(f.field_width(), FieldWidth::Width64 | FieldWidth::WidthNatural))
        .collect()
}

/// Spec 7.4: class by VTL, TD_VCPU context, size from the encoding's width.
#[inline]
pub fn vmcs_field_code(field: VmcsField, vtl: GuestVtl) -> TdxExtendedFieldCode {
    let class_code = match vtl {
        GuestVtl::Vtl0 => CLASS_VMCS_1,
        GuestVtl::Vtl1 => CLASS_VMCS_2,
    };
    let field_size = match field.field_width() {
        FieldWidth::Width16 => 1,
        FieldWidth::Width32 => 2,
        FieldWidth::Width64 | FieldWidth::WidthNatural => 3,
    };
    TdxExtendedFieldCode::new()
        .with_class_code(class_code)
        .with_context_code(CONTEXT_TD_VCPU)
        .with_field_code(field.0)
        .with_field_size(field_size)
}

#[derive(Clone, Copy)]
pub struct MemoryRange {
    pub start: u64,
    pub end: u64,
}

impl MemoryRange {
    pub fn new(start: u64, end: u64) -> MemoryRange {
        assert!(start % SIZE_4K == 0 && end % SIZE_4K == 0 && start <= end);
        MemoryRange { start, end }
    }
}

/// Attributes the attribute sweeps write: VTL0 full access.
pub fn page_attrs() -> (u64, u64) {
    (
        TdgMemPageGpaAttr::new().with_l2_vm1(GPA_VM_ATTRIBUTES_FULL_ACCESS).into_bits(),
        TdgMemPageAttrWriteR8::new().with_l2_vm1(GPA_VM_ATTRIBUTES_MASK_ALL_CHANGED).into_bits(),
    )
}

// ---- the transport -----------------------------------------------------------

#[derive(Default, Clone, Copy)]
pub struct TdcallInput {
    pub leaf: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
}

#[derive(Clone, Copy)]
#[allow(dead_code)]
pub struct TdcallOutput {
    pub rax: TdCallResult,
    pub rcx: u64,
    pub rdx: u64,
    pub r8: u64,
    pub r10: u64,
    pub r11: u64,
}

impl TdcallInput {
    /// The kernel path's checks (spec 2.4) and marshalling.
    #[inline]
    pub fn to_mshv(&self) -> MshvTdcall {
        assert_ne!(self.leaf, LEAF_VP_VMCALL, "VP.VMCALL cannot go through the kernel");
        assert_eq!(self.r10, 0);
        assert_eq!(self.r11, 0);
        assert_eq!(self.r12, 0);
        assert_eq!(self.r13, 0);
        assert_eq!(self.r14, 0);
        assert_eq!(self.r15, 0);
        MshvTdcall { rax: self.leaf, rcx: self.rcx, rdx: self.rdx, r8: self.r8, r9: self.r9, r10_out: 0, r11_out: 0 }
    }
}

impl TdcallOutput {
    #[inline]
    pub fn from_mshv(io: &MshvTdcall) -> TdcallOutput {
        TdcallOutput {
            rax: TdCallResult::from_bits(io.rax),
            rcx: io.rcx,
            rdx: io.rdx,
            r8: io.r8,
            r10: io.r10_out,
            r11: io.r11_out,
        }
    }
}

/// Performs one TDCALL.
pub trait Tdcall {
    fn tdcall(&mut self, input: &TdcallInput) -> TdcallOutput;
}

#[inline]
fn tdcall_vp_rd<T: Tdcall>(call: &mut T, code: TdxExtendedFieldCode) -> Result<u64, TdCallResult> {
    let out = call.tdcall(&TdcallInput { leaf: LEAF_VP_RD, rdx: code.into_bits(), ..Default::default() });
    if out.rax.code() == SUCCESS {
        Ok(out.r8)
    } else {
        Err(out.rax)
    }
}

#[inline]
fn tdcall_vp_wr<T: Tdcall>(call: &mut T, code: TdxExtendedFieldCode, value: u64, mask: u64) -> Result<u64, TdCallResult> {
    let out = call.tdcall(&TdcallInput { leaf: LEAF_VP_WR, rdx: code.into_bits(), r8: value, r9: mask, ..Default::default() });
    if out.rax.code() == SUCCESS {
        Ok(out.r8)
    } else {
        Err(out.rax)
    }
}

#[inline]
fn tdcall_accept_pages<T: Tdcall>(call: &mut T, gpn: u64, large: bool) -> Result<(), u32> {
    let rcx = TdgMemPageAcceptRcx::new()
        .with_gpa_page_number(gpn)
        .with_level(if large { LEVEL_2M } else { LEVEL_4K });
    let out = call.tdcall(&TdcallInput { leaf: LEAF_MEM_PAGE_ACCEPT, rcx: rcx.into_bits(), ..Default::default() });
    match out.rax.code() {
        SUCCESS => Ok(()),
        c => Err(c),
    }
}

/// Release build of set_page_attr (spec 7.11): ATTR.WR, no read-back.
#[inline]
fn set_page_attr<T: Tdcall>(call: &mut T, mapping: TdgMemPageAttrWriteRcx, attributes: u64, mask: u64) -> Result<(), u32> {
    let out = call.tdcall(&TdcallInput {
        leaf: LEAF_MEM_PAGE_ATTR_WR,
        rcx: mapping.into_bits(),
        rdx: attributes,
        r8: mask,
        ..Default::default()
    });
    match out.rax.code() {
        SUCCESS => Ok(()),
        c => Err(c),
    }
}

#[derive(Debug)]
#[allow(dead_code)]
pub enum AcceptPagesError {
    Unknown(u32),
    Attributes(u32),
    Invalid(u32),
    Busy(u32),
}

/// The page operations of the VTL file (spec 7.12-7.14).
pub struct MshvVtl<T: Tdcall> {
    call: T,
}

impl<T: Tdcall> MshvVtl<T> {
    pub fn new(call: T) -> MshvVtl<T> {
        MshvVtl { call }
    }

    pub fn tdx_accept_pages(&mut self, range: MemoryRange, attributes: Option<(u64, u64)>) -> Result<(), AcceptPagesError> {
        let MemoryRange { mut start, end } = range;
        while start != end {
            let gpn = start / SIZE_4K;
            if start % SIZE_2M == 0 && end - start >= SIZE_2M {
                match tdcall_accept_pages(&mut self.call, gpn, true) {
                    Ok(()) => {
                        if let Some((a, m)) = attributes {
                            let map = TdgMemPageAttrWriteRcx::new().with_gpa_page_number(gpn).with_level(LEVEL_2M);
                            set_page_attr(&mut self.call, map, a, m).map_err(AcceptPagesError::Attributes)?;
                        }
                        start += SIZE_2M;
                        continue;
                    }
                    Err(OPERAND_BUSY) => return Err(AcceptPagesError::Busy(OPERAND_BUSY)),
                    Err(OPERAND_INVALID) => return Err(AcceptPagesError::Invalid(OPERAND_INVALID)),
                    Err(PAGE_ALREADY_ACCEPTED) => panic!("page {gpn} already accepted"),
                    Err(PAGE_SIZE_MISMATCH) => {}
                    Err(c) => return Err(AcceptPagesError::Unknown(c)),
                }
            }
            match tdcall_accept_pages(&mut self.call, gpn, false) {
                Ok(()) => {
                    if let Some((a, m)) = attributes {
                        let map = TdgMemPageAttrWriteRcx::new().with_gpa_page_number(gpn).with_level(LEVEL_4K);
                        set_page_attr(&mut self.call, map, a, m).map_err(AcceptPagesError::Attributes)?;
                    }
                    start += SIZE_4K;
                }
                Err(OPERAND_BUSY) => return Err(AcceptPagesError::Busy(OPERAND_BUSY)),
                Err(OPERAND_INVALID) => return Err(AcceptPagesError::Invalid(OPERAND_INVALID)),
                Err(PAGE_ALREADY_ACCEPTED) => panic!("page {gpn} already accepted"),
                Err(c) => return Err(AcceptPagesError::Unknown(c)),
            }
        }
        Ok(())
    }

    pub fn tdx_set_page_attributes(&mut self, range: MemoryRange, attributes: u64, mask: u64) -> Result<(), u32> {
        let MemoryRange { mut start, end } = range;
        while start != end {
            let gpn = start / SIZE_4K;
            if start % SIZE_2M == 0 && end - start >= SIZE_2M {
                let map = TdgMemPageAttrWriteRcx::new().with_gpa_page_number(gpn).with_level(LEVEL_2M);
                match set_page_attr(&mut self.call, map, attributes, mask) {
                    Ok(()) => {
                        start += SIZE_2M;
                        continue;
                    }
                    Err(PAGE_SIZE_MISMATCH) => {}
                    Err(c) => return Err(c),
                }
            }
            let map = TdgMemPageAttrWriteRcx::new().with_gpa_page_number(gpn).with_level(LEVEL_4K);
            set_page_attr(&mut self.call, map, attributes, mask)?;
            start += SIZE_4K;
        }
        Ok(())
    }
}

// ---- the runner --------------------------------------------------------------

/// Per-VTL state swapped through the run page (spec 7.16).
#[derive(Clone, Copy, Default)]
pub struct TdxPrivateRegs {
    pub rflags: u64,
    pub rip: u64,
    pub ssp: u64,
    pub rvi: u8,
    pub svi: u8,
    pub msr_kernel_gs_base: u64,
    pub msr_star: u64,
    pub msr_lstar: u64,
    pub msr_sfmask: u64,
    pub msr_xss: u64,
    pub msr_tsc_aux: u64,
    pub vp_entry_flags: TdxVmFlags,
}

impl TdxPrivateRegs {
    pub fn new(vtl: GuestVtl) -> TdxPrivateRegs {
        TdxPrivateRegs {
            rflags: 0x2,
            vp_entry_flags: TdxVmFlags::new().with_vm_index(vtl as u8 + 1).with_invd_translations(1),
            ..Default::default()
        }
    }
}

// Run-page offsets (spec 3, 7.15, 7.16).
const RUN_CONTEXT: usize = 272;
const CONTEXT_SIZE: usize = 1024;
const RUN_RFLAGS: usize = 640;
const RUN_RIP: usize = 648;
const RUN_SSP: usize = 656;
const RUN_RVI: usize = 664;
const RUN_SVI: usize = 665;
const RUN_KERNEL_GS_BASE: usize = 408;
const RUN_STAR: usize = 416;
const RUN_LSTAR: usize = 424;
const RUN_SFMASK: usize = 432;
const RUN_XSS: usize = 440;
const RUN_TSC_AUX: usize = 456;
const RUN_ENTRY_RCX: usize = 504;
const PAGE: usize = 4096;

/// One record of a snapshot: the context, both APIC pages, the private
/// registers and a list of VMCS fields of both VTLs.
pub struct Snapshot {
    pub t_ns: u64,
    pub context: Vec<u8>,
    pub apic_vtl0: Vec<u8>,
    pub apic_vtl1: Vec<u8>,
    pub private_regs: TdxPrivateRegs,
    pub vmcs: [Vec<u64>; 2],
}

impl Default for Snapshot {
    fn default() -> Snapshot {
        Snapshot {
            t_ns: 0,
            context: vec![0; CONTEXT_SIZE],
            apic_vtl0: vec![0; PAGE],
            apic_vtl1: vec![0; PAGE],
            private_regs: TdxPrivateRegs::default(),
            vmcs: [Vec::new(), Vec::new()],
        }
    }
}

/// A processor runner: the transport for its VP and its mapped pages.
pub struct Runner<T: Tdcall> {
    call: T,
    run: *mut u8,
    apic0: *mut u8,
    apic1: *mut u8,
}

impl<T: Tdcall> Runner<T> {
    pub fn new(call: T, run: *mut u8, apic0: *mut u8, apic1: *mut u8) -> Runner<T> {
        assert!(!run.is_null() && !apic0.is_null() && !apic1.is_null());
        Runner { call, run, apic0, apic1 }
    }

    #[inline]
    fn read_vmcs(&mut self, vtl: GuestVtl, field: VmcsField) -> u64 {
        tdcall_vp_rd(&mut self.call, vmcs_field_code(field, vtl))
            .unwrap_or_else(|e| panic!("fatal vmcs access failure: {:#x}", e.into_bits()))
    }

    #[inline]
    pub fn read_vmcs64(&mut self, vtl: GuestVtl, field: VmcsField) -> u64 {
        assert!(matches!(field.field_width(), FieldWidth::Width64 | FieldWidth::WidthNatural), "{field:?}");
        self.read_vmcs(vtl, field)
    }

    #[inline]
    pub fn write_vmcs64(&mut self, vtl: GuestVtl, field: VmcsField, mask: u64, value: u64) -> u64 {
        assert!(matches!(field.field_width(), FieldWidth::Width64 | FieldWidth::WidthNatural), "{field:?}");
        tdcall_vp_wr(&mut self.call, vmcs_field_code(field, vtl), value, mask)
            .unwrap_or_else(|e| panic!("fatal vmcs access failure: {:#x}", e.into_bits()))
    }

    /// What a Rust caller writes for a batch: a loop of reads.
    #[inline]
    pub fn read_vmcs_batch(&mut self, vtl: GuestVtl, fields: &[VmcsField], out: &mut [u64]) {
        for (f, o) in fields.iter().zip(out.iter_mut()) {
            *o = self.read_vmcs64(vtl, *f);
        }
    }

    /// `samples` rows of (t_ns, one value per field), no pause between rows.
    pub fn poll_vmcs(&mut self, vtl: GuestVtl, fields: &[VmcsField], samples: usize, rows: &mut [u64]) {
        let w = 1 + fields.len();
        for s in 0..samples {
            let row = &mut rows[s * w..(s + 1) * w];
            row[0] = now_ns();
            self.read_vmcs_batch(vtl, fields, &mut row[1..]);
        }
    }

    #[inline]
    unsafe fn rd64(&self, off: usize) -> u64 {
        std::ptr::read_volatile(self.run.add(off) as *const u64)
    }

    #[inline]
    unsafe fn wr64(&self, off: usize, v: u64) {
        std::ptr::write_volatile(self.run.add(off) as *mut u64, v)
    }

    pub fn read_private_regs(&self, regs: &mut TdxPrivateRegs) {
        unsafe {
            regs.rflags = self.rd64(RUN_RFLAGS);
            regs.rip = self.rd64(RUN_RIP);
            regs.ssp = self.rd64(RUN_SSP);
            regs.rvi = std::ptr::read_volatile(self.run.add(RUN_RVI));
            regs.svi = std::ptr::read_volatile(self.run.add(RUN_SVI));
            regs.msr_kernel_gs_base = self.rd64(RUN_KERNEL_GS_BASE);
            regs.msr_star = self.rd64(RUN_STAR);
            regs.msr_lstar = self.rd64(RUN_LSTAR);
            regs.msr_sfmask = self.rd64(RUN_SFMASK);
            regs.msr_xss = self.rd64(RUN_XSS);
            regs.msr_tsc_aux = self.rd64(RUN_TSC_AUX);
            regs.vp_entry_flags = TdxVmFlags::from_bits(self.rd64(RUN_ENTRY_RCX));
        }
    }

    pub fn write_private_regs(&self, regs: &TdxPrivateRegs) {
        unsafe {
            self.wr64(RUN_RFLAGS, regs.rflags);
            self.wr64(RUN_RIP, regs.rip);
            self.wr64(RUN_SSP, regs.ssp);
            std::ptr::write_volatile(self.run.add(RUN_RVI), regs.rvi);
            std::ptr::write_volatile(self.run.add(RUN_SVI), regs.svi);
            self.wr64(RUN_KERNEL_GS_BASE, regs.msr_kernel_gs_base);
            self.wr64(RUN_STAR, regs.msr_star);
            self.wr64(RUN_LSTAR, regs.msr_lstar);
            self.wr64(RUN_SFMASK, regs.msr_sfmask);
            self.wr64(RUN_XSS, regs.msr_xss);
            self.wr64(RUN_TSC_AUX, regs.msr_tsc_aux);
            self.wr64(RUN_ENTRY_RCX, regs.vp_entry_flags.into_bits());
        }
    }

    pub fn snapshot(&mut self, fields: &[VmcsField], snap: &mut Snapshot) {
        snap.t_ns = now_ns();
        unsafe {
            std::ptr::copy_nonoverlapping(self.run.add(RUN_CONTEXT), snap.context.as_mut_ptr(), CONTEXT_SIZE);
            std::ptr::copy_nonoverlapping(self.apic0, snap.apic_vtl0.as_mut_ptr(), PAGE);
            std::ptr::copy_nonoverlapping(self.apic1, snap.apic_vtl1.as_mut_ptr(), PAGE);
        }
        let mut regs = TdxPrivateRegs::default();
        self.read_private_regs(&mut regs);
        snap.private_regs = regs;
        for (i, vtl) in [GuestVtl::Vtl0, GuestVtl::Vtl1].into_iter().enumerate() {
            let mut v = std::mem::take(&mut snap.vmcs[i]);
            v.resize(fields.len(), 0);
            self.read_vmcs_batch(vtl, fields, &mut v);
            snap.vmcs[i] = v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_codes_match_spec_8_1() {
        assert_eq!(vmcs_field_code(VmcsField(0x681E), GuestVtl::Vtl0).into_bits(), 0x242000030000681E);
        assert_eq!(vmcs_field_code(VmcsField(0x681E), GuestVtl::Vtl1).into_bits(), 0x2C2000030000681E);
        assert_eq!(vmcs_field_code(VmcsField(0x4002), GuestVtl::Vtl0).into_bits(), 0x2420000200004002);
        assert_eq!(vmcs_field_code(VmcsField(0x0802), GuestVtl::Vtl1).into_bits(), 0x2C20000100000802);
    }

    #[test]
    fn page_operands_match_spec_8_2() {
        let rcx = TdgMemPageAcceptRcx::new().with_gpa_page_number(0x200).with_level(LEVEL_2M);
        assert_eq!(rcx.into_bits(), 0x200001);
        assert_eq!(page_attrs(), (0x800F_0000, 0x000F_0000));
        assert_eq!(TdxPrivateRegs::new(GuestVtl::Vtl1).vp_entry_flags.into_bits(), 0x0020000000000001);
    }
}
