//! A restricted pickle reader: enough of the pickle machine to read what `torch.save` writes
//! for a state_dict, and nothing that can run code.
//!
//! Pickle is a small stack machine whose `GLOBAL` + `REDUCE` opcodes import and call any Python
//! callable, which is how a hostile checkpoint runs `os.system`. This reader never imports
//! anything: `GLOBAL` resolves the module and name against a fixed table of what a tensor
//! state_dict needs ([`Global`]) and refuses every other name with
//! [`WeightError::RefusedGlobal`]; `REDUCE` "calls" only those entries, each implemented here
//! as a plain data constructor. Opcodes outside the binary subset `torch.save` emits (the text
//! opcodes of protocol 0, `INST`/`OBJ`, the extension registry) are refused too.
//!
//! Objects live in one arena and refer to each other by index, as pickle's memo does: a
//! memoised list that is appended to later is the same list, cycles cost nothing, and no
//! recursive structure is ever walked or dropped recursively (deep nesting cannot overflow the
//! stack). Every opcode consumes at least one input byte and creates at most one object; every
//! length is checked against the remaining input before anything is allocated; what a call may
//! copy is bounded (the constructors' arities, 8 dimensions for `torch.Size`, 64-byte storage
//! keys, 64 KiB for `_codecs.encode`); and every object is charged against a budget of 64 bytes
//! per input byte (plus 1 MiB), past which the pickle is refused. So the work and the memory are
//! linear in the input's size, whatever the pickle repeats.

use crate::WeightError;
use safetensors::Dtype;
use std::collections::HashMap;

/// An index into [`Pickle::objs`].
pub(crate) type Id = usize;

/// The Python objects this reader can build.
#[derive(Debug, Clone)]
pub(crate) enum Obj {
    /// `None`.
    None,
    /// `True`/`False`.
    Bool(bool),
    /// An int that fits in i64.
    Int(i64),
    /// An int that does not (its little-endian two's-complement bytes).
    BigInt(Vec<u8>),
    /// A float.
    Float(f64),
    /// A str.
    Str(String),
    /// A bytes object.
    Bytes(Vec<u8>),
    /// A tuple.
    Tuple(Vec<Id>),
    /// A list.
    List(Vec<Id>),
    /// A dict or OrderedDict, in insertion order.
    Dict(Vec<(Id, Id)>),
    /// One of the allowed globals.
    Global(Global),
    /// A storage named by a persistent id.
    Storage(Box<StorageRef>),
    /// A tensor: a strided view of a storage.
    Tensor(Box<TensorRef>),
}

/// The globals a state_dict pickle may name, each with the meaning this reader gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Global {
    /// `collections.OrderedDict`.
    OrderedDict,
    /// `torch._utils._rebuild_tensor_v2` (and v3, whose extra arguments are ignored too).
    RebuildTensorV2,
    /// `torch._utils._rebuild_tensor` (old PyTorch).
    RebuildTensor,
    /// `torch._utils._rebuild_parameter`.
    RebuildParameter,
    /// `torch._utils._rebuild_parameter_with_state`.
    RebuildParameterWithState,
    /// `torch._tensor._rebuild_from_type_v2`.
    RebuildFromTypeV2,
    /// `torch.Tensor` (as a type argument only).
    TensorType,
    /// `torch.nn.parameter.Parameter` (as a type argument only).
    ParameterType,
    /// `torch.Size`.
    Size,
    /// `_codecs.encode` (how protocol 2 stores bytes).
    CodecsEncode,
    /// `torch.FloatStorage` and friends: the element type of a storage.
    Storage(Dtype),
}

impl Global {
    /// The global `module.name`, or the error that refuses it.
    fn resolve(module: &str, name: &str) -> Result<Self, WeightError> {
        let g = match (module, name) {
            ("collections", "OrderedDict") => Self::OrderedDict,
            ("torch._utils", "_rebuild_tensor_v2" | "_rebuild_tensor_v3") => Self::RebuildTensorV2,
            ("torch._utils", "_rebuild_tensor") => Self::RebuildTensor,
            ("torch._utils", "_rebuild_parameter") => Self::RebuildParameter,
            ("torch._utils", "_rebuild_parameter_with_state") => Self::RebuildParameterWithState,
            ("torch._tensor", "_rebuild_from_type_v2") => Self::RebuildFromTypeV2,
            ("torch", "Tensor") => Self::TensorType,
            ("torch.nn.parameter", "Parameter") => Self::ParameterType,
            ("torch", "Size") => Self::Size,
            ("_codecs", "encode") => Self::CodecsEncode,
            ("torch", storage) if storage.ends_with("Storage") => {
                let dtype = match storage {
                    "FloatStorage" => Dtype::F32,
                    "DoubleStorage" => Dtype::F64,
                    "HalfStorage" => Dtype::F16,
                    "BFloat16Storage" => Dtype::BF16,
                    "LongStorage" => Dtype::I64,
                    "IntStorage" => Dtype::I32,
                    "ShortStorage" => Dtype::I16,
                    "CharStorage" => Dtype::I8,
                    "ByteStorage" => Dtype::U8,
                    "BoolStorage" => Dtype::BOOL,
                    _ => {
                        return Err(WeightError::UnsupportedStorage {
                            name: format!("torch.{storage}"),
                        });
                    }
                };
                Self::Storage(dtype)
            }
            _ => {
                return Err(WeightError::RefusedGlobal {
                    global: format!("{module}.{name}"),
                });
            }
        };
        Ok(g)
    }
}

/// A storage as a persistent id names it: its element type, its key (the archive entry
/// `data/KEY`, or the legacy format's storage id), its length in elements, and for the
/// legacy format's storage views an offset into the storage of the same key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StorageRef {
    pub dtype: Dtype,
    pub key: String,
    pub numel: u64,
    pub view_offset: u64,
}

/// A tensor: `size` and `stride` in elements, `offset` in elements from the storage's start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TensorRef {
    pub storage: StorageRef,
    pub offset: u64,
    pub size: Vec<u64>,
    pub stride: Vec<u64>,
}

/// The result of reading one pickle: the arena and the root object.
#[derive(Debug)]
pub(crate) struct Pickle {
    objs: Vec<Obj>,
    /// The object `STOP` returned.
    pub root: Id,
    /// Bytes read, up to and including `STOP` (where the next pickle in the file starts).
    pub consumed: usize,
}

fn err(reason: impl Into<String>) -> WeightError {
    WeightError::Pickle {
        reason: reason.into(),
    }
}

/// The ranks (dimensions) a tensor may have: a real state_dict's are at most 5 (3-d convs).
const MAX_RANK: usize = 8;

/// The longest storage key accepted: torch.save writes `"0"`, `"1"`, … (the legacy format:
/// a decimal address).
const MAX_STORAGE_KEY: usize = 64;

/// The longest str `_codecs.encode` may turn into bytes (each call copies it).
const MAX_ENCODED: usize = 1 << 16;

/// The memory the machine may use: this many bytes per input byte, plus [`BUDGET_BASE`]. A
/// backstop beside the per-opcode limits: whatever copies an input could make the machine
/// repeat are charged here, and the pickle is refused past the budget.
const BUDGET_PER_BYTE: usize = 64;

/// See [`BUDGET_PER_BYTE`].
const BUDGET_BASE: usize = 1 << 20;

/// A cursor over the input with checked reads.
struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Input<'a> {
    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8], WeightError> {
        let left = self.data.len() - self.pos;
        if n > left as u64 {
            return Err(err(format!(
                "{what} of {n} bytes at byte {} runs past the end of the pickle ({left} bytes left)",
                self.pos
            )));
        }
        let s = &self.data[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, WeightError> {
        Ok(self.take(1, "an opcode argument")?[0])
    }
    fn u16(&mut self) -> Result<u16, WeightError> {
        let b = self.take(2, "an opcode argument")?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, WeightError> {
        let b = self.take(4, "an opcode argument")?;
        Ok(u32::from_le_bytes(b.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Result<u64, WeightError> {
        let b = self.take(8, "an opcode argument")?;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }
    /// A newline-terminated line (the `GLOBAL` opcode's arguments), at most 256 bytes.
    fn line(&mut self) -> Result<&'a str, WeightError> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .take(257)
            .position(|&b| b == b'\n')
            .ok_or_else(|| err(format!("unterminated GLOBAL name at byte {}", self.pos)))?;
        let s = std::str::from_utf8(&rest[..n])
            .map_err(|_| err(format!("GLOBAL name at byte {} is not UTF-8", self.pos)))?;
        self.pos += n + 1;
        Ok(s)
    }
}

/// The pickle machine's state.
struct Machine {
    /// Bytes the machine may still allocate (see [`BUDGET_PER_BYTE`]).
    budget: usize,
    objs: Vec<Obj>,
    stack: Vec<Id>,
    marks: Vec<usize>,
    memo: HashMap<u32, Id>,
}

impl Machine {
    /// Charge `bytes` against the budget.
    fn charge(&mut self, bytes: usize) -> Result<(), WeightError> {
        self.budget = self.budget.checked_sub(bytes).ok_or_else(|| {
            err(format!(
                "the pickle builds more than {BUDGET_PER_BYTE} bytes of objects per byte of input"
            ))
        })?;
        Ok(())
    }

    /// Push a new object, charged with its size and what it owns.
    fn push(&mut self, o: Obj) -> Result<(), WeightError> {
        let owned = match &o {
            Obj::Str(s) => s.len(),
            Obj::Bytes(b) | Obj::BigInt(b) => b.len(),
            Obj::Tuple(v) | Obj::List(v) => 8 * v.len(),
            Obj::Dict(v) => 16 * v.len(),
            Obj::Storage(s) => 64 + s.key.len(),
            Obj::Tensor(t) => 64 + t.storage.key.len() + 16 * t.size.len(),
            _ => 0,
        };
        self.charge(std::mem::size_of::<Obj>() + 16 + owned)?;
        self.objs.push(o);
        self.stack.push(self.objs.len() - 1);
        Ok(())
    }
    fn pop(&mut self, op: &str) -> Result<Id, WeightError> {
        if self.marks.last().is_some_and(|&m| m >= self.stack.len()) {
            return Err(err(format!(
                "{op} found a MARK where it expected an object"
            )));
        }
        self.stack
            .pop()
            .ok_or_else(|| err(format!("{op} on an empty stack")))
    }
    fn top(&self, op: &str) -> Result<Id, WeightError> {
        self.stack
            .last()
            .copied()
            .ok_or_else(|| err(format!("{op} on an empty stack")))
    }
    /// The objects above the last MARK, removing them and the mark.
    fn pop_mark(&mut self, op: &str) -> Result<Vec<Id>, WeightError> {
        let m = self
            .marks
            .pop()
            .ok_or_else(|| err(format!("{op} without a MARK")))?;
        Ok(self.stack.split_off(m))
    }
    fn str(&self, id: Id) -> Option<&str> {
        match &self.objs[id] {
            Obj::Str(s) => Some(s),
            _ => None,
        }
    }
    fn int(&self, id: Id) -> Option<i64> {
        match self.objs[id] {
            Obj::Int(i) => Some(i),
            Obj::Bool(b) => Some(i64::from(b)),
            _ => None,
        }
    }
    fn items(&self, id: Id) -> Option<&[Id]> {
        match &self.objs[id] {
            Obj::Tuple(v) | Obj::List(v) => Some(v),
            _ => None,
        }
    }
    fn memo_put(&mut self, key: u32, op: &str) -> Result<(), WeightError> {
        let top = self.top(op)?;
        self.memo.insert(key, top);
        Ok(())
    }
    fn memo_get(&mut self, key: u32) -> Result<(), WeightError> {
        let id = *self
            .memo
            .get(&key)
            .ok_or_else(|| err(format!("memo key {key} read before it was written")))?;
        self.stack.push(id);
        Ok(())
    }

    /// Append `values` to the list `list`.
    fn extend_list(&mut self, list: Id, values: Vec<Id>, op: &str) -> Result<(), WeightError> {
        match &mut self.objs[list] {
            Obj::List(v) => {
                v.extend(values);
                Ok(())
            }
            other => Err(err(format!("{op} on a {}", kind(other)))),
        }
    }

    /// Add `pairs` (key, value, key, value, ...) to the dict `dict`.
    fn extend_dict(&mut self, dict: Id, pairs: Vec<Id>, op: &str) -> Result<(), WeightError> {
        if !pairs.len().is_multiple_of(2) {
            return Err(err(format!("{op} with an odd number of items")));
        }
        match &mut self.objs[dict] {
            Obj::Dict(v) => {
                v.extend(pairs.chunks_exact(2).map(|p| (p[0], p[1])));
                Ok(())
            }
            other => Err(err(format!("{op} on a {}", kind(other)))),
        }
    }

    /// The integer `id` as a non-negative size, or an error naming `what`.
    fn size(&self, id: Id, what: &str) -> Result<u64, WeightError> {
        match self.int(id) {
            Some(i) if i >= 0 => Ok(i as u64),
            _ => Err(err(format!(
                "{what} is {}, expected a non-negative int",
                describe(&self.objs[id])
            ))),
        }
    }

    /// A tuple (or `torch.Size`, which is built as one) of non-negative ints.
    fn sizes(&self, id: Id, what: &str) -> Result<Vec<u64>, WeightError> {
        let items = self.items(id).ok_or_else(|| {
            err(format!(
                "{what} is {}, expected a tuple",
                describe(&self.objs[id])
            ))
        })?;
        if items.len() > MAX_RANK {
            return Err(err(format!(
                "{what} has {} dimensions (at most {MAX_RANK} are accepted)",
                items.len()
            )));
        }
        items.iter().map(|&i| self.size(i, what)).collect()
    }

    /// What `REDUCE` does with an allowed global: build the object it stands for.
    fn call(&self, f: Global, args: Id, depth: u8) -> Result<Obj, WeightError> {
        let a: &[Id] = self
            .items(args)
            .ok_or_else(|| err("REDUCE arguments are not a tuple"))?;
        // Each constructor's arity as PyTorch calls it (v3 adds a dtype, `_with_state` a
        // state): more arguments are refused, so no call reads or copies an unbounded tuple.
        let arity = match f {
            Global::OrderedDict => 0,
            Global::RebuildTensorV2 => 8,
            Global::RebuildTensor => 4,
            Global::RebuildParameter => 3,
            Global::RebuildParameterWithState => 4,
            Global::RebuildFromTypeV2 => 4,
            Global::Size => 1,
            Global::CodecsEncode => 2,
            Global::TensorType | Global::ParameterType | Global::Storage(_) => 0,
        };
        if a.len() > arity {
            return Err(err(format!(
                "{f:?} called with {} arguments (at most {arity})",
                a.len()
            )));
        }
        let arg = |i: usize| {
            a.get(i)
                .copied()
                .ok_or_else(|| err(format!("{f:?} called with {} arguments", a.len())))
        };
        match f {
            // torch.save pickles OrderedDict() and then its items with SETITEMS.
            Global::OrderedDict => Ok(Obj::Dict(Vec::new())),
            Global::RebuildTensorV2 | Global::RebuildTensor => {
                let storage = match &self.objs[arg(0)?] {
                    Obj::Storage(s) => (**s).clone(),
                    other => {
                        return Err(err(format!(
                            "a tensor built from {}, not a storage",
                            describe(other)
                        )));
                    }
                };
                let offset = self.size(arg(1)?, "a tensor's storage offset")?;
                let size = self.sizes(arg(2)?, "a tensor's size")?;
                let stride = self.sizes(arg(3)?, "a tensor's stride")?;
                if size.len() != stride.len() {
                    return Err(err(format!(
                        "a tensor of size {size:?} has stride {stride:?}"
                    )));
                }
                Ok(Obj::Tensor(Box::new(TensorRef {
                    storage,
                    offset,
                    size,
                    stride,
                })))
            }
            Global::RebuildParameter | Global::RebuildParameterWithState => {
                match &self.objs[arg(0)?] {
                    t @ Obj::Tensor(_) => Ok(t.clone()),
                    other => Err(err(format!(
                        "a Parameter built from {}, not a tensor",
                        describe(other)
                    ))),
                }
            }
            Global::RebuildFromTypeV2 => {
                if depth > 0 {
                    return Err(err("_rebuild_from_type_v2 nested in itself"));
                }
                let func = match self.objs[arg(0)?] {
                    Obj::Global(
                        g @ (Global::RebuildTensorV2
                        | Global::RebuildTensor
                        | Global::RebuildParameter
                        | Global::RebuildParameterWithState),
                    ) => g,
                    ref other => {
                        return Err(err(format!(
                            "_rebuild_from_type_v2 given {} to call",
                            describe(other)
                        )));
                    }
                };
                match self.objs[arg(1)?] {
                    Obj::Global(Global::TensorType | Global::ParameterType) => {}
                    ref other => {
                        return Err(err(format!(
                            "_rebuild_from_type_v2 given the type {}",
                            describe(other)
                        )));
                    }
                }
                self.call(func, arg(2)?, depth + 1)
            }
            Global::Size => match a {
                [] => Ok(Obj::Tuple(Vec::new())),
                [t] => {
                    let items = self
                        .items(*t)
                        .ok_or_else(|| err("torch.Size built from something other than a tuple"))?;
                    if items.len() > MAX_RANK {
                        return Err(err(format!(
                            "torch.Size of {} dimensions (at most {MAX_RANK} are accepted)",
                            items.len()
                        )));
                    }
                    Ok(Obj::Tuple(items.to_vec()))
                }
                _ => unreachable!("arity checked above"),
            },
            Global::CodecsEncode => {
                let s = self
                    .str(arg(0)?)
                    .ok_or_else(|| err("_codecs.encode of something other than a str"))?;
                if s.len() > MAX_ENCODED {
                    return Err(err(format!(
                        "_codecs.encode of {} bytes (at most {MAX_ENCODED} are accepted)",
                        s.len()
                    )));
                }
                match a.get(1).and_then(|&e| self.str(e)) {
                    Some("latin1" | "latin-1") => {}
                    other => {
                        return Err(err(format!(
                            "_codecs.encode with encoding {other:?} (only latin1 is accepted)"
                        )));
                    }
                }
                let mut out = Vec::with_capacity(s.len());
                for c in s.chars() {
                    out.push(
                        u8::try_from(u32::from(c))
                            .map_err(|_| err("_codecs.encode of a character outside latin1"))?,
                    );
                }
                Ok(Obj::Bytes(out))
            }
            Global::TensorType | Global::ParameterType | Global::Storage(_) => Err(err(format!(
                "refusing to call {f:?}: only data constructors may be called"
            ))),
        }
    }

    /// `BINPERSID`: a persistent id names a storage, `('storage', type, key, location, numel[,
    /// view])`.
    fn persistent(&self, pid: Id) -> Result<Obj, WeightError> {
        let items = self
            .items(pid)
            .ok_or_else(|| err("a persistent id that is not a tuple"))?;
        let bad = || err("a persistent id that is not ('storage', type, key, location, numel)");
        if items.len() < 5 || self.str(items[0]) != Some("storage") {
            return Err(bad());
        }
        let dtype = match self.objs[items[1]] {
            Obj::Global(Global::Storage(d)) => d,
            _ => return Err(bad()),
        };
        let key = self.str(items[2]).ok_or_else(bad)?;
        if key.len() > MAX_STORAGE_KEY {
            return Err(err(format!(
                "a storage key of {} bytes (at most {MAX_STORAGE_KEY}; torch.save writes numbers)",
                key.len()
            )));
        }
        let key = key.to_string();
        let numel = self.size(items[4], "a storage's length")?;
        let mut storage = StorageRef {
            dtype,
            key,
            numel,
            view_offset: 0,
        };
        // Old PyTorch's storage views: (view key, offset, view size).
        if let Some(&view) = items.get(5)
            && !matches!(self.objs[view], Obj::None)
        {
            let v = self.items(view).filter(|v| v.len() == 3).ok_or_else(bad)?;
            let offset = self.size(v[1], "a storage view's offset")?;
            let len = self.size(v[2], "a storage view's length")?;
            if offset.checked_add(len).is_none_or(|end| end > numel) {
                return Err(err(format!(
                    "a storage view of {len} elements at {offset} in a storage of {numel}"
                )));
            }
            storage.view_offset = offset;
            storage.numel = len;
        }
        Ok(Obj::Storage(Box::new(storage)))
    }
}

/// A short name of an object's type, for messages.
fn kind(o: &Obj) -> &'static str {
    match o {
        Obj::None => "None",
        Obj::Bool(_) => "bool",
        Obj::Int(_) | Obj::BigInt(_) => "int",
        Obj::Float(_) => "float",
        Obj::Str(_) => "str",
        Obj::Bytes(_) => "bytes",
        Obj::Tuple(_) => "tuple",
        Obj::List(_) => "list",
        Obj::Dict(_) => "dict",
        Obj::Global(_) => "global",
        Obj::Storage(_) => "storage",
        Obj::Tensor(_) => "tensor",
    }
}

/// An object for a message: its type, and its value where short.
fn describe(o: &Obj) -> String {
    match o {
        Obj::Int(i) => format!("the int {i}"),
        Obj::Float(f) => format!("the float {f}"),
        Obj::Bytes(b) => format!("a bytes object of {} bytes", b.len()),
        Obj::Str(s) if s.len() <= 40 => format!("the str {s:?}"),
        Obj::Global(g) => format!("{g:?}"),
        other => format!("a {}", kind(other)),
    }
}

/// Read one pickle from the start of `data`, up to its `STOP`.
pub(crate) fn parse(data: &[u8]) -> Result<Pickle, WeightError> {
    let mut input = Input { data, pos: 0 };
    let mut m = Machine {
        budget: data
            .len()
            .saturating_mul(BUDGET_PER_BYTE)
            .saturating_add(BUDGET_BASE),
        objs: Vec::new(),
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
    };
    loop {
        let at = input.pos;
        let op = *data
            .get(at)
            .ok_or_else(|| err(format!("the pickle ends at byte {at} without STOP")))?;
        input.pos += 1;
        match op {
            0x80 => {
                let proto = input.u8()?;
                if proto > 5 {
                    return Err(err(format!("pickle protocol {proto} (at most 5 is known)")));
                }
            }
            0x95 => {
                input.u64()?; // FRAME: a hint of the next frame's length
            }
            b'.' => {
                let root = m.pop("STOP")?;
                return Ok(Pickle {
                    objs: m.objs,
                    root,
                    consumed: input.pos,
                });
            }
            b'(' => m.marks.push(m.stack.len()),
            b')' => m.push(Obj::Tuple(Vec::new()))?,
            b']' => m.push(Obj::List(Vec::new()))?,
            b'}' => m.push(Obj::Dict(Vec::new()))?,
            b't' => {
                let items = m.pop_mark("TUPLE")?;
                m.push(Obj::Tuple(items))?;
            }
            0x85..=0x87 => {
                let n = usize::from(op - 0x84);
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(m.pop("TUPLE1/2/3")?);
                }
                items.reverse();
                m.push(Obj::Tuple(items))?;
            }
            b'l' => {
                let items = m.pop_mark("LIST")?;
                m.push(Obj::List(items))?;
            }
            b'd' => {
                let items = m.pop_mark("DICT")?;
                m.push(Obj::Dict(Vec::new()))?;
                let d = m.top("DICT")?;
                m.extend_dict(d, items, "DICT")?;
            }
            b'a' => {
                let v = m.pop("APPEND")?;
                let l = m.top("APPEND")?;
                m.extend_list(l, vec![v], "APPEND")?;
            }
            b'e' => {
                let items = m.pop_mark("APPENDS")?;
                let l = m.top("APPENDS")?;
                m.extend_list(l, items, "APPENDS")?;
            }
            b's' => {
                let v = m.pop("SETITEM")?;
                let k = m.pop("SETITEM")?;
                let d = m.top("SETITEM")?;
                m.extend_dict(d, vec![k, v], "SETITEM")?;
            }
            b'u' => {
                let items = m.pop_mark("SETITEMS")?;
                let d = m.top("SETITEMS")?;
                m.extend_dict(d, items, "SETITEMS")?;
            }
            b'N' => m.push(Obj::None)?,
            0x88 => m.push(Obj::Bool(true))?,
            0x89 => m.push(Obj::Bool(false))?,
            b'K' => {
                let v = input.u8()?;
                m.push(Obj::Int(i64::from(v)))?;
            }
            b'M' => {
                let v = input.u16()?;
                m.push(Obj::Int(i64::from(v)))?;
            }
            b'J' => {
                let v = input.u32()? as i32;
                m.push(Obj::Int(i64::from(v)))?;
            }
            0x8a | 0x8b => {
                let n = if op == 0x8a {
                    u64::from(input.u8()?)
                } else {
                    u64::from(input.u32()?)
                };
                let b = input.take(n, "a LONG")?;
                if b.len() <= 8 {
                    let negative = b.last().is_some_and(|&x| x & 0x80 != 0);
                    let mut full = [if negative { 0xff } else { 0 }; 8];
                    full[..b.len()].copy_from_slice(b);
                    m.push(Obj::Int(i64::from_le_bytes(full)))?;
                } else {
                    m.push(Obj::BigInt(b.to_vec()))?;
                }
            }
            b'G' => {
                let b = input.take(8, "a BINFLOAT")?;
                m.push(Obj::Float(f64::from_be_bytes(
                    b.try_into().expect("8 bytes"),
                )))?;
            }
            b'X' | 0x8c | 0x8d => {
                let n = match op {
                    b'X' => u64::from(input.u32()?),
                    0x8c => u64::from(input.u8()?),
                    _ => input.u64()?,
                };
                let b = input.take(n, "a str")?;
                let s = std::str::from_utf8(b)
                    .map_err(|_| err(format!("a str at byte {at} is not UTF-8")))?;
                m.push(Obj::Str(s.to_string()))?;
            }
            b'T' | b'U' => {
                // Python 2 str: bytes, read as latin1 text as Python 3's pickle does by default.
                let n = if op == b'T' {
                    let n = input.u32()? as i32;
                    u64::try_from(n).map_err(|_| err("a BINSTRING of negative length"))?
                } else {
                    u64::from(input.u8()?)
                };
                let b = input.take(n, "a str")?;
                m.push(Obj::Str(b.iter().map(|&c| char::from(c)).collect()))?;
            }
            b'B' | b'C' | 0x8e => {
                let n = match op {
                    b'B' => u64::from(input.u32()?),
                    b'C' => u64::from(input.u8()?),
                    _ => input.u64()?,
                };
                let b = input.take(n, "a bytes object")?;
                m.push(Obj::Bytes(b.to_vec()))?;
            }
            b'c' => {
                let module = input.line()?;
                let name = input.line()?;
                let g = Global::resolve(module, name)?;
                m.push(Obj::Global(g))?;
            }
            0x93 => {
                let name = m.pop("STACK_GLOBAL")?;
                let module = m.pop("STACK_GLOBAL")?;
                let (Some(module), Some(name)) = (m.str(module), m.str(name)) else {
                    return Err(err("STACK_GLOBAL of something other than two strs"));
                };
                let g = Global::resolve(module, name)?;
                m.push(Obj::Global(g))?;
            }
            b'q' => {
                let k = input.u8()?;
                m.memo_put(u32::from(k), "BINPUT")?;
            }
            b'r' => {
                let k = input.u32()?;
                m.memo_put(k, "LONG_BINPUT")?;
            }
            0x94 => {
                let k = u32::try_from(m.memo.len()).map_err(|_| err("memo overflow"))?;
                m.memo_put(k, "MEMOIZE")?;
            }
            b'h' => {
                let k = input.u8()?;
                m.memo_get(u32::from(k))?;
            }
            b'j' => {
                let k = input.u32()?;
                m.memo_get(k)?;
            }
            b'R' => {
                let args = m.pop("REDUCE")?;
                let f = m.pop("REDUCE")?;
                let Obj::Global(g) = m.objs[f] else {
                    return Err(err(format!(
                        "REDUCE calls {}, not a global",
                        describe(&m.objs[f])
                    )));
                };
                let o = m.call(g, args, 0)?;
                m.push(o)?;
            }
            0x81 => {
                // NEWOBJ: cls.__new__(cls, *args); only OrderedDict is a class that may be built.
                let args = m.pop("NEWOBJ")?;
                let cls = m.pop("NEWOBJ")?;
                match m.objs[cls] {
                    Obj::Global(Global::OrderedDict) => {
                        let o = m.call(Global::OrderedDict, args, 0)?;
                        m.push(o)?;
                    }
                    ref other => {
                        return Err(err(format!("NEWOBJ of {}", describe(other))));
                    }
                }
            }
            b'b' => {
                // BUILD sets an object's state: the `_metadata` of a state_dict, a tensor's
                // Python attributes. Neither matters here; anything else is refused.
                let _state = m.pop("BUILD")?;
                let obj = m.top("BUILD")?;
                if !matches!(m.objs[obj], Obj::Dict(_) | Obj::Tensor(_)) {
                    return Err(err(format!("BUILD on {}", describe(&m.objs[obj]))));
                }
            }
            b'Q' => {
                let pid = m.pop("BINPERSID")?;
                let o = m.persistent(pid)?;
                m.push(o)?;
            }
            b'0' => {
                m.pop("POP")?;
            }
            b'1' => {
                m.pop_mark("POP_MARK")?;
            }
            b'2' => {
                let t = m.top("DUP")?;
                m.stack.push(t);
            }
            other => {
                return Err(err(format!(
                    "refusing pickle opcode {} at byte {at}",
                    opcode_name(other)
                )));
            }
        }
    }
}

/// The name of an opcode this reader does not accept, for the error.
fn opcode_name(op: u8) -> String {
    let name = match op {
        b'i' => "INST",
        b'o' => "OBJ",
        b'P' => "PERSID",
        0x82..=0x84 => "EXT1/2/4",
        0x90 => "ADDITEMS",
        0x8f => "EMPTY_SET",
        0x91 => "FROZENSET",
        0x92 => "NEWOBJ_EX",
        0x96 => "BYTEARRAY8",
        0x97 => "NEXT_BUFFER",
        0x98 => "READONLY_BUFFER",
        b'I' | b'L' | b'F' | b'S' | b'V' | b'p' | b'g' => "of protocol 0 (text)",
        _ => "",
    };
    if name.is_empty() {
        format!("0x{op:02x}")
    } else {
        format!("{name} (0x{op:02x})")
    }
}

impl Pickle {
    /// The object `id`.
    pub(crate) fn get(&self, id: Id) -> &Obj {
        &self.objs[id]
    }
    /// The str `id`, if it is one.
    pub(crate) fn str(&self, id: Id) -> Option<&str> {
        match &self.objs[id] {
            Obj::Str(s) => Some(s),
            _ => None,
        }
    }
    /// The dict `id`'s items, if it is one.
    pub(crate) fn dict(&self, id: Id) -> Option<&[(Id, Id)]> {
        match &self.objs[id] {
            Obj::Dict(v) => Some(v),
            _ => None,
        }
    }
    /// Every storage the pickle named (by persistent id, or inside a tensor).
    pub(crate) fn storages(&self) -> impl Iterator<Item = &StorageRef> {
        self.objs.iter().filter_map(|o| match o {
            Obj::Storage(s) => Some(&**s),
            Obj::Tensor(t) => Some(&t.storage),
            _ => None,
        })
    }

    /// A short description of `id`, for messages.
    pub(crate) fn describe(&self, id: Id) -> String {
        describe(&self.objs[id])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(data: &[u8]) -> String {
        parse(data).unwrap_err().to_string()
    }

    #[test]
    fn builds_a_dict_of_ints_and_strs() {
        // {'a': 1, 'b': 'x'} at protocol 2 with memo puts.
        let p =
            parse(b"\x80\x02}q\x00(X\x01\x00\x00\x00aK\x01X\x01\x00\x00\x00bX\x01\x00\x00\x00xu.")
                .unwrap();
        let d = p.dict(p.root).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(p.str(d[1].0), Some("b"));
        assert_eq!(p.str(d[1].1), Some("x"));
        assert!(matches!(p.get(d[0].1), Obj::Int(1)));
    }

    #[test]
    fn a_memoised_list_is_shared_and_may_contain_itself() {
        // l = []; l.append(l): ] q0 h0 a .
        let p = parse(b"\x80\x02]q\x00h\x00a.").unwrap();
        match p.get(p.root) {
            Obj::List(v) => assert_eq!(v, &[p.root]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn negative_and_big_longs() {
        let p = parse(b"\x8a\x01\xff.").unwrap();
        assert!(matches!(p.get(p.root), Obj::Int(-1)));
        let p = parse(b"\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x01.").unwrap();
        assert!(matches!(p.get(p.root), Obj::BigInt(_)));
    }

    #[test]
    fn hostile_globals_and_opcodes_are_refused() {
        assert!(
            refused(b"cposix\nsystem\n(X\x04\x00\x00\x00trueR.")
                .starts_with("refusing pickle global posix.system: ")
        );
        assert!(refused(b"\x8c\x08builtins\x8c\x04eval\x93.").contains("builtins.eval"));
        assert!(refused(b"(cos\nsystem\nX\x01\x00\x00\x00xo.").contains("os.system"));
        assert!(refused(b"(X\x01\x00\x00\x00xi__main__\nX\n.").contains("INST"));
        // Calling an allowed type that is not a data constructor.
        assert!(refused(b"ctorch\nTensor\n)R.").contains("only data constructors"));
    }

    #[test]
    fn truncated_and_inconsistent_pickles_are_errors() {
        for (bytes, needle) in [
            (&b""[..], "without STOP"),
            (b"\x80\x02", "without STOP"),
            (b"X\xff\xff\xff\x7f", "runs past the end"),
            (b"\x8d\xff\xff\xff\xff\xff\xff\xff\xff", "runs past the end"),
            (b"h\x05.", "memo key 5"),
            (b"t.", "without a MARK"),
            (b"a.", "empty stack"),
            (b"(.", "MARK"),
            (b"K\x00K\x01K\x02s.", "SETITEM on a int"),
            (b"\x80\x09.", "protocol 9"),
        ] {
            let e = refused(bytes);
            assert!(e.contains(needle), "{bytes:?}: {e}");
        }
    }

    #[test]
    fn an_object_is_32_bytes() {
        // The memory bound in the module's doc rests on this.
        assert!(std::mem::size_of::<Obj>() <= 32);
    }

    #[test]
    fn deep_nesting_needs_no_recursion() {
        // 100 000 nested lists: ] ] ] ... then 99 999 APPENDs.
        let n = 100_000;
        let mut data = vec![b']'; n];
        data.extend(std::iter::repeat_n(b'a', n - 1));
        data.push(b'.');
        let p = parse(&data).unwrap();
        assert!(matches!(p.get(p.root), Obj::List(v) if v.len() == 1));
    }
}
