//! Programs run with libtorch: an activation function or an update rule, validated by the
//! space layer, compiled once to a tree of tch operations.
//!
//! Scalar parts (hyperparameters, the step, numbers) are gathered into slots computed once per
//! step on the host, for all parameter tensors; tensor parts are evaluated per tensor, in place
//! on temporaries and state where autograd allows (update rules run without autograd), so a
//! step allocates only the temporaries the program's arithmetic needs, never the program.
//!
//! The semantics are those of the forms' rules in `space::node`: `sqrt` of the absolute value,
//! `log(|a| + 1e-6)`, `exp` of at most 30, division by a denominator at least 1e-12 away from
//! zero (keeping its sign), `interp(a, b, c) = c*a + (1-c)*b`.
//!
//! A program is scored by training a reference network with it (an MLP, or a candidate
//! architecture for update rules) over a grid of learning rates, each training through the
//! shared loop of [`crate::trainer`]: the same precision, time limit and failures as networks.

use crate::compile::count_params;
use crate::data::Data;
use crate::device::device_name;
use crate::trainer::{self, Divergence, Fit, Step};
use archsmith::space::{Diagnostic, Form, Node, Op, Sym};
pub use archsmith::train::program::{
    program_eval, Hyper, ProgramEval, Reference, EXP_MAX, LOG_EPS, OPTIMIZER_LRS, SAFE_DENOMINATOR,
};
use archsmith::train::{Failure, FailureReason, Quiet, Recipe, TrainResult};
use serde::{Deserialize, Serialize};
use std::time::Instant;
use tch::nn;
use tch::{Device, Kind, TchError, Tensor};

/// Why a program cannot be compiled: it was not validated for its kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot compile the program at `{node}`: {message}")]
pub struct ProgramError {
    pub node: String,
    pub message: String,
}

fn err<T>(node: &Node, message: impl Into<String>) -> Result<T, ProgramError> {
    Err(ProgramError {
        node: archsmith::space::node::abbreviate(&node.to_string(), 60),
        message: message.into(),
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Un {
    Neg,
    Abs,
    Square,
    Sqrt,
    Exp,
    Log,
    Sigmoid,
    Tanh,
    Erf,
    Sin,
    Sign,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bin {
    Add,
    Sub,
    Mul,
    Div,
    Max,
    Min,
    Pow,
}

fn un_of(f: Form) -> Option<Un> {
    Some(match f {
        Form::Neg => Un::Neg,
        Form::Abs => Un::Abs,
        Form::Square => Un::Square,
        Form::Sqrt => Un::Sqrt,
        Form::Exp => Un::Exp,
        Form::Log => Un::Log,
        Form::Sigmoid => Un::Sigmoid,
        Form::Tanh => Un::Tanh,
        Form::Erf => Un::Erf,
        Form::Sin => Un::Sin,
        Form::Sign => Un::Sign,
        _ => return None,
    })
}

fn bin_of(f: Form) -> Option<Bin> {
    Some(match f {
        Form::Add => Bin::Add,
        Form::Sub => Bin::Sub,
        Form::Mul => Bin::Mul,
        Form::Div => Bin::Div,
        Form::Max => Bin::Max,
        Form::Min => Bin::Min,
        Form::Pow => Bin::Pow,
        _ => return None,
    })
}

/// A scalar expression, computed on the host.
#[derive(Clone, Debug, PartialEq)]
enum S {
    Const(f64),
    Sym(Sym),
    Un(Un, Box<S>),
    Bin(Bin, Box<S>, Box<S>),
    Clip(Box<S>, Box<S>),
    Interp(Box<S>, Box<S>, Box<S>),
}

/// The values of the scalar symbols at one step.
#[derive(Clone, Copy, Debug)]
struct Scalars {
    t: f64,
    lr: f64,
    hyper: Hyper,
}

fn safe_den(b: f64) -> f64 {
    if b.abs() < SAFE_DENOMINATOR {
        SAFE_DENOMINATOR.copysign(b)
    } else {
        b
    }
}

impl S {
    fn eval(&self, v: &Scalars) -> f64 {
        match self {
            S::Const(c) => *c,
            S::Sym(s) => match s {
                Sym::T => v.t,
                Sym::Lr => v.lr,
                Sym::Beta1 => v.hyper.beta1,
                Sym::Beta2 => v.hyper.beta2,
                Sym::Wd => v.hyper.wd,
                Sym::Eps => v.hyper.eps,
                _ => f64::NAN,
            },
            S::Un(u, a) => {
                let a = a.eval(v);
                match u {
                    Un::Neg => -a,
                    Un::Abs => a.abs(),
                    Un::Square => a * a,
                    Un::Sqrt => a.abs().sqrt(),
                    Un::Exp => a.min(EXP_MAX).exp(),
                    Un::Log => (a.abs() + LOG_EPS).ln(),
                    Un::Sigmoid => 1.0 / (1.0 + (-a).exp()),
                    Un::Tanh => a.tanh(),
                    Un::Erf => libm::erf(a),
                    Un::Sin => a.sin(),
                    Un::Sign => {
                        if a > 0.0 {
                            1.0
                        } else if a < 0.0 {
                            -1.0
                        } else {
                            0.0
                        }
                    }
                }
            }
            S::Bin(b, x, y) => {
                let (x, y) = (x.eval(v), y.eval(v));
                match b {
                    Bin::Add => x + y,
                    Bin::Sub => x - y,
                    Bin::Mul => x * y,
                    Bin::Div => x / safe_den(y),
                    Bin::Max => x.max(y),
                    Bin::Min => x.min(y),
                    Bin::Pow => x.powf(y),
                }
            }
            S::Clip(a, c) => {
                let c = c.eval(v).abs();
                a.eval(v).clamp(-c, c)
            }
            S::Interp(a, b, c) => {
                let c = c.eval(v);
                c * a.eval(v) + (1.0 - c) * b.eval(v)
            }
        }
    }

    /// Whether the value is never negative for hyperparameters that pass [`Hyper::check`].
    fn nonneg(&self) -> bool {
        match self {
            S::Const(c) => *c >= 0.0,
            S::Sym(_) => true,
            S::Un(u, a) => match u {
                Un::Abs | Un::Square | Un::Sqrt | Un::Exp | Un::Sigmoid => true,
                Un::Tanh | Un::Erf | Un::Sign => a.nonneg(),
                _ => false,
            },
            S::Bin(b, x, y) => match b {
                Bin::Add | Bin::Mul | Bin::Div | Bin::Pow | Bin::Min => x.nonneg() && y.nonneg(),
                Bin::Max => x.nonneg() || y.nonneg(),
                // 1 - beta^t, the bias correction, is the one subtraction worth knowing.
                Bin::Sub => match (&**x, &**y) {
                    (S::Const(c), S::Bin(Bin::Pow, base, e)) => {
                        *c >= 1.0 && base.unit() && e.nonneg()
                    }
                    _ => false,
                },
            },
            S::Clip(a, _) => a.nonneg(),
            S::Interp(a, b, c) => a.nonneg() && b.nonneg() && c.unit(),
        }
    }

    /// Whether the value lies in [0, 1].
    fn unit(&self) -> bool {
        match self {
            S::Const(c) => (0.0..=1.0).contains(c),
            S::Sym(s) => matches!(s, Sym::Beta1 | Sym::Beta2),
            S::Un(Un::Sigmoid, _) => true,
            S::Bin(Bin::Mul, x, y) => x.unit() && y.unit(),
            _ => false,
        }
    }
}

/// Where a tensor symbol lives during evaluation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TSym {
    /// The activation's input, or the gradient.
    In,
    /// The weights.
    W,
    /// State k.
    State(usize),
}

/// A tensor expression; scalars are slots of the per-step table.
#[derive(Clone, Debug, PartialEq)]
enum T {
    Sym(TSym),
    Un(Un, Box<T>),
    /// Both tensors.
    Bin(Bin, Box<T>, Box<T>),
    /// Tensor op scalar slot, or scalar slot op tensor when `left` is set.
    BinS {
        op: Bin,
        t: Box<T>,
        slot: usize,
        left: bool,
    },
    Clip(Box<T>, usize),
    /// `interp(a, b, c)` of two tensors: `b + c*(a-b)`.
    Interp(Box<T>, Box<T>, usize),
}

/// Either part of an expression.
enum E {
    S(S),
    T(T),
}

struct Builder {
    slots: Vec<S>,
    /// Tensor symbols bound: `x` (activations) or `g`, `w` and the state (update rules).
    activation: bool,
    states: Vec<Sym>,
}

impl Builder {
    /// `t * weight + k` for a tensor and two scalars (interp with one scalar side).
    fn scaled_plus(&mut self, t: T, weight: S, k: S) -> E {
        let scaled = T::BinS {
            op: Bin::Mul,
            t: Box::new(t),
            slot: self.slot(weight),
            left: true,
        };
        E::T(T::BinS {
            op: Bin::Add,
            t: Box::new(scaled),
            slot: self.slot(k),
            left: false,
        })
    }

    fn slot(&mut self, s: S) -> usize {
        if let Some(i) = self.slots.iter().position(|x| *x == s) {
            return i;
        }
        self.slots.push(s);
        self.slots.len() - 1
    }

    fn expr(&mut self, n: &Node) -> Result<E, ProgramError> {
        match n {
            Node::Op(op @ Op::Const(_)) => Ok(E::S(S::Const(op.const_value().unwrap_or(0.0)))),
            Node::Op(Op::Sym(s)) => {
                if s.is_scalar() {
                    if self.activation {
                        return err(n, "an activation function reads only x");
                    }
                    return Ok(E::S(S::Sym(*s)));
                }
                let t = match (*s, self.activation) {
                    (Sym::X, true) => TSym::In,
                    (Sym::G, false) => TSym::In,
                    (Sym::W, false) => TSym::W,
                    (s, false) if s.is_state() => match self.states.iter().position(|x| *x == s) {
                        Some(k) => TSym::State(k),
                        None => return err(n, "state used but not declared"),
                    },
                    _ => return err(n, "symbol not bound in this kind of program"),
                };
                Ok(E::T(T::Sym(t)))
            }
            Node::Form(f, ch) => {
                let parts = ch
                    .iter()
                    .map(|c| self.expr(c))
                    .collect::<Result<Vec<_>, _>>()?;
                if let Some(u) = un_of(*f) {
                    let [a] = <[E; 1]>::try_from(parts).map_err(|_| arity(n))?;
                    return Ok(match a {
                        E::S(s) => E::S(S::Un(u, Box::new(s))),
                        E::T(t) => E::T(T::Un(u, Box::new(t))),
                    });
                }
                if let Some(b) = bin_of(*f) {
                    let [x, y] = <[E; 2]>::try_from(parts).map_err(|_| arity(n))?;
                    return Ok(match (x, y) {
                        (E::S(x), E::S(y)) => E::S(S::Bin(b, Box::new(x), Box::new(y))),
                        (E::T(x), E::T(y)) => E::T(T::Bin(b, Box::new(x), Box::new(y))),
                        (E::T(x), E::S(y)) => E::T(T::BinS {
                            op: b,
                            t: Box::new(x),
                            slot: self.slot(y),
                            left: false,
                        }),
                        (E::S(x), E::T(y)) => E::T(T::BinS {
                            op: b,
                            t: Box::new(y),
                            slot: self.slot(x),
                            left: true,
                        }),
                    });
                }
                match f {
                    Form::Clip => {
                        let [a, c] = <[E; 2]>::try_from(parts).map_err(|_| arity(n))?;
                        match (a, c) {
                            (E::S(a), E::S(c)) => Ok(E::S(S::Clip(Box::new(a), Box::new(c)))),
                            (E::T(a), E::S(c)) => Ok(E::T(T::Clip(Box::new(a), self.slot(c)))),
                            _ => err(n, "clip's bound must be a scalar"),
                        }
                    }
                    Form::Interp => {
                        let [a, b, c] = <[E; 3]>::try_from(parts).map_err(|_| arity(n))?;
                        let E::S(c) = c else {
                            return err(n, "interp's weight must be a scalar");
                        };
                        Ok(match (a, b) {
                            (E::S(a), E::S(b)) => {
                                E::S(S::Interp(Box::new(a), Box::new(b), Box::new(c)))
                            }
                            (E::T(a), E::T(b)) => {
                                E::T(T::Interp(Box::new(a), Box::new(b), self.slot(c)))
                            }
                            // One side scalar: c*a + (1-c)*b as a scaled tensor plus a scalar.
                            (E::T(a), E::S(b)) => {
                                let one_minus =
                                    S::Bin(Bin::Sub, Box::new(S::Const(1.0)), Box::new(c.clone()));
                                let k = S::Bin(Bin::Mul, Box::new(one_minus), Box::new(b));
                                self.scaled_plus(a, c, k)
                            }
                            (E::S(a), E::T(b)) => {
                                let one_minus =
                                    S::Bin(Bin::Sub, Box::new(S::Const(1.0)), Box::new(c.clone()));
                                let k = S::Bin(Bin::Mul, Box::new(c), Box::new(a));
                                self.scaled_plus(b, one_minus, k)
                            }
                        })
                    }
                    _ => err(n, format!("`{}` is not an expression form", f.name())),
                }
            }
            Node::Op(op) => err(n, format!("`{op}` is not a program value")),
        }
    }

    fn tensor(&mut self, n: &Node) -> Result<T, ProgramError> {
        match self.expr(n)? {
            E::T(t) => Ok(t),
            E::S(_) => err(n, "expected a tensor, found a scalar"),
        }
    }
}

fn arity(n: &Node) -> ProgramError {
    ProgramError {
        node: n.to_string(),
        message: "wrong number of parts".into(),
    }
}

/// A value met during evaluation: borrowed from the environment or a temporary we own (and
/// may overwrite in place).
enum Val<'a> {
    B(&'a Tensor),
    O(Tensor),
}

impl Val<'_> {
    fn t(&self) -> &Tensor {
        match self {
            Val::B(t) => t,
            Val::O(t) => t,
        }
    }

    fn owned(self) -> Tensor {
        match self {
            Val::B(t) => t.shallow_clone(),
            Val::O(t) => t,
        }
    }
}

struct Env<'a> {
    input: &'a Tensor,
    w: Option<&'a Tensor>,
    states: &'a [Tensor],
    /// The scalar slots at this step.
    sc: &'a [f64],
    /// Whether temporaries may be overwritten (not under autograd).
    inplace: bool,
    /// Which states are known never to be negative.
    nonneg_states: &'a [bool],
}

impl T {
    fn nonneg(&self, env_states: &[bool], slots: &[S]) -> bool {
        match self {
            T::Sym(TSym::State(k)) => env_states.get(*k).copied().unwrap_or(false),
            T::Sym(_) => false,
            T::Un(u, a) => match u {
                Un::Abs | Un::Square | Un::Sqrt | Un::Exp | Un::Sigmoid => true,
                Un::Tanh | Un::Erf | Un::Sign => a.nonneg(env_states, slots),
                _ => false,
            },
            T::Bin(b, x, y) => match b {
                Bin::Add | Bin::Mul | Bin::Div | Bin::Min => {
                    x.nonneg(env_states, slots) && y.nonneg(env_states, slots)
                }
                Bin::Max => x.nonneg(env_states, slots) || y.nonneg(env_states, slots),
                _ => false,
            },
            T::BinS { op, t, slot, left } => {
                let s = slots[*slot].nonneg();
                let tn = t.nonneg(env_states, slots);
                match op {
                    Bin::Add | Bin::Mul | Bin::Min => s && tn,
                    Bin::Div => s && tn,
                    Bin::Max => s || tn,
                    Bin::Pow => !*left && tn,
                    Bin::Sub => false,
                }
            }
            T::Clip(a, _) => a.nonneg(env_states, slots),
            T::Interp(a, b, c) => {
                a.nonneg(env_states, slots) && b.nonneg(env_states, slots) && slots[*c].unit()
            }
        }
    }
}

type R<T> = Result<T, TchError>;

fn un(u: Un, v: Val<'_>, inplace: bool, nonneg: bool) -> R<Tensor> {
    let v = match v {
        Val::O(mut t) if inplace => {
            let _ = match u {
                Un::Neg => t.f_neg_()?,
                Un::Abs => t.f_abs_()?,
                Un::Square => t.f_square_()?,
                Un::Sqrt => {
                    if !nonneg {
                        let _ = t.f_abs_()?;
                    }
                    t.f_sqrt_()?
                }
                Un::Exp => {
                    let _ = t.f_clamp_max_(EXP_MAX)?;
                    t.f_exp_()?
                }
                Un::Log => {
                    if !nonneg {
                        let _ = t.f_abs_()?;
                    }
                    let _ = t.f_add_scalar_(LOG_EPS)?;
                    t.f_log_()?
                }
                Un::Sigmoid => t.f_sigmoid_()?,
                Un::Tanh => t.f_tanh_()?,
                Un::Erf => t.f_erf_()?,
                Un::Sin => t.f_sin_()?,
                Un::Sign => t.f_sign_()?,
            };
            return Ok(t);
        }
        v => v,
    };
    let x = v.t();
    match u {
        Un::Neg => x.f_neg(),
        Un::Abs => x.f_abs(),
        Un::Square => x.f_square(),
        Un::Sqrt if nonneg => x.f_sqrt(),
        Un::Sqrt => x.f_abs()?.f_sqrt(),
        Un::Exp => x.f_clamp_max(EXP_MAX)?.f_exp(),
        Un::Log if nonneg => x.f_add_scalar(LOG_EPS)?.f_log(),
        Un::Log => x.f_abs()?.f_add_scalar(LOG_EPS)?.f_log(),
        Un::Sigmoid => x.f_sigmoid(),
        Un::Tanh => x.f_tanh(),
        Un::Erf => x.f_erf(),
        Un::Sin => x.f_sin(),
        Un::Sign => x.f_sign(),
    }
}

/// A denominator moved at least [`SAFE_DENOMINATOR`] away from zero, keeping its sign.
fn safe(v: Val<'_>, inplace: bool, nonneg: bool) -> R<Tensor> {
    match (v, inplace, nonneg) {
        (Val::O(mut t), true, true) => {
            let _ = t.f_clamp_min_(SAFE_DENOMINATOR)?;
            Ok(t)
        }
        (v, _, true) => v.t().f_clamp_min(SAFE_DENOMINATOR),
        (v, _, false) => {
            let t = v.t();
            // Where t is exactly zero, copysign(1e-12, +0.0) is positive.
            t.f_abs()?.f_clamp_min(SAFE_DENOMINATOR)?.f_copysign(t)
        }
    }
}

fn bin_tt(op: Bin, a: Val<'_>, b: Val<'_>, inplace: bool) -> R<Tensor> {
    match (op, a, b, inplace) {
        (Bin::Add | Bin::Mul, Val::B(a), Val::O(mut b), true) => {
            if op == Bin::Add {
                let _ = b.f_add_(a)?;
            } else {
                let _ = b.f_mul_(a)?;
            }
            Ok(b)
        }
        (op, Val::O(mut a), b, true) => {
            let b = b.t();
            let _ = match op {
                Bin::Add => a.f_add_(b)?,
                Bin::Sub => a.f_sub_(b)?,
                Bin::Mul => a.f_mul_(b)?,
                Bin::Div => a.f_div_(b)?,
                Bin::Max => return a.f_maximum(b),
                Bin::Min => return a.f_minimum(b),
                Bin::Pow => a.f_pow_tensor_(b)?,
            };
            Ok(a)
        }
        (op, a, b, _) => {
            let (a, b) = (a.t(), b.t());
            match op {
                Bin::Add => a.f_add(b),
                Bin::Sub => a.f_sub(b),
                Bin::Mul => a.f_mul(b),
                Bin::Div => a.f_div(b),
                Bin::Max => a.f_maximum(b),
                Bin::Min => a.f_minimum(b),
                Bin::Pow => a.f_pow(b),
            }
        }
    }
}

fn bin_ts(op: Bin, t: Val<'_>, s: f64, left: bool, inplace: bool) -> R<Tensor> {
    // Scalar on the left: s - t = -(t - s), s / t = reciprocal(t) * s, the rest commute.
    match (inplace, t) {
        (true, Val::O(mut t)) => {
            let _ = match (op, left) {
                (Bin::Add, _) => t.f_add_scalar_(s)?,
                (Bin::Mul, _) => t.f_mul_scalar_(s)?,
                (Bin::Sub, false) => t.f_sub_scalar_(s)?,
                (Bin::Sub, true) => {
                    let _ = t.f_sub_scalar_(s)?;
                    t.f_neg_()?
                }
                (Bin::Div, false) => t.f_div_scalar_(safe_den(s))?,
                (Bin::Div, true) => {
                    let _ = t.f_reciprocal_()?;
                    t.f_mul_scalar_(s)?
                }
                (Bin::Max, _) => t.f_clamp_min_(s)?,
                (Bin::Min, _) => t.f_clamp_max_(s)?,
                (Bin::Pow, false) => t.f_pow_(s)?,
                (Bin::Pow, true) => return Tensor::f_pow_scalar(s, &t),
            };
            Ok(t)
        }
        (_, t) => {
            let t = t.t();
            match (op, left) {
                (Bin::Add, _) => t.f_add_scalar(s),
                (Bin::Mul, _) => t.f_mul_scalar(s),
                (Bin::Sub, false) => t.f_sub_scalar(s),
                (Bin::Sub, true) => t.f_neg()?.f_add_scalar(s),
                (Bin::Div, false) => t.f_div_scalar(safe_den(s)),
                (Bin::Div, true) => t.f_reciprocal()?.f_mul_scalar(s),
                (Bin::Max, _) => t.f_clamp_min(s),
                (Bin::Min, _) => t.f_clamp_max(s),
                (Bin::Pow, false) => t.f_pow_tensor_scalar(s),
                (Bin::Pow, true) => Tensor::f_pow_scalar(s, t),
            }
        }
    }
}

impl T {
    /// A lower bound of the value at this step, when one is known: `add(c, e)` with `e` never
    /// negative is at least `c` (Adam's `sqrt(v) + eps`).
    fn lower_bound(&self, env: &Env<'_>, slots: &[S]) -> Option<f64> {
        match self {
            T::BinS {
                op: Bin::Add,
                t,
                slot,
                ..
            } if t.nonneg(env.nonneg_states, slots) => Some(env.sc[*slot]),
            _ => None,
        }
    }

    /// The value as a denominator: moved away from zero unless it provably is.
    fn safe_den<'a>(&self, env: &Env<'a>, slots: &[S]) -> R<Val<'a>> {
        if self
            .lower_bound(env, slots)
            .is_some_and(|b| b >= SAFE_DENOMINATOR)
        {
            return self.eval(env, slots);
        }
        let nn = self.nonneg(env.nonneg_states, slots);
        Ok(Val::O(safe(self.eval(env, slots)?, env.inplace, nn)?))
    }

    fn eval<'a>(&self, env: &Env<'a>, slots: &[S]) -> R<Val<'a>> {
        let ip = env.inplace;
        Ok(match self {
            T::Sym(TSym::In) => Val::B(env.input),
            T::Sym(TSym::W) => Val::B(env.w.unwrap_or(env.input)),
            T::Sym(TSym::State(k)) => Val::B(&env.states[*k]),
            T::Un(u, a) => {
                let nn = a.nonneg(env.nonneg_states, slots);
                Val::O(un(*u, a.eval(env, slots)?, ip, nn)?)
            }
            T::Bin(Bin::Div, x, y) => {
                let den = y.safe_den(env, slots)?;
                Val::O(bin_tt(Bin::Div, x.eval(env, slots)?, den, ip)?)
            }
            T::Bin(b, x, y) => Val::O(bin_tt(*b, x.eval(env, slots)?, y.eval(env, slots)?, ip)?),
            T::BinS { op, t, slot, left } => {
                let v = t.eval(env, slots)?;
                let s = env.sc[*slot];
                if *op == Bin::Div && *left {
                    // s / t: t moved away from zero first.
                    let nn = t.nonneg(env.nonneg_states, slots);
                    let den = safe(v, ip, nn)?;
                    return Ok(Val::O(bin_ts(Bin::Div, Val::O(den), s, true, ip)?));
                }
                Val::O(bin_ts(*op, v, s, *left, ip)?)
            }
            T::Clip(a, slot) => {
                let c = env.sc[*slot].abs();
                match (ip, a.eval(env, slots)?) {
                    (true, Val::O(mut t)) => {
                        let _ = t.f_clamp_(-c, c)?;
                        Val::O(t)
                    }
                    (_, v) => Val::O(v.t().f_clamp(-c, c)?),
                }
            }
            T::Interp(a, b, slot) => {
                let c = env.sc[*slot];
                let av = a.eval(env, slots)?;
                match (ip, b.eval(env, slots)?) {
                    (true, Val::O(mut bt)) => {
                        let _ = bt.f_lerp_(av.t(), c)?;
                        Val::O(bt)
                    }
                    (_, bv) => Val::O(bv.t().f_lerp(av.t(), c)?),
                }
            }
        })
    }
}

/// A compiled activation function.
#[derive(Clone, Debug)]
pub struct Activation {
    expr: T,
    slots: Vec<S>,
    sc: Vec<f64>,
    text: String,
}

impl Activation {
    /// Compiles a validated activation (an expression in `x`).
    pub fn compile(node: &Node) -> Result<Activation, ProgramError> {
        let mut b = Builder {
            slots: Vec::new(),
            activation: true,
            states: Vec::new(),
        };
        let expr = b.tensor(node)?;
        // Only numbers are scalars in an activation: the slots are fixed once.
        let v = Scalars {
            t: 1.0,
            lr: 0.0,
            hyper: Hyper::default(),
        };
        let sc = b.slots.iter().map(|s| s.eval(&v)).collect();
        Ok(Activation {
            expr,
            slots: b.slots,
            sc,
            text: node.to_string(),
        })
    }

    /// Applies the function elementwise (out of place, so that autograd can go through it).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, TchError> {
        let env = Env {
            input: x,
            w: None,
            states: &[],
            sc: &self.sc,
            inplace: false,
            nonneg_states: &[],
        };
        Ok(self.expr.eval(&env, &self.slots)?.owned())
    }

    pub fn text(&self) -> &str {
        &self.text
    }
}

enum Stmt {
    Assign(usize, T),
    /// `assign(m, interp(m, b, c))`: `m.lerp_(b, 1-c)` in place.
    Lerp(usize, T, usize),
    Step(T),
}

/// A compiled update rule: what to do with one parameter tensor at one step.
pub struct Rule {
    states: Vec<Sym>,
    stmts: Vec<Stmt>,
    slots: Vec<S>,
    nonneg_states: Vec<bool>,
    text: String,
}

impl Rule {
    /// Compiles a validated update rule `prog(state(...), statements...)`.
    pub fn compile(node: &Node) -> Result<Rule, ProgramError> {
        let Node::Form(Form::Prog, ch) = node else {
            return err(node, "an update rule is prog(state(...), statements...)");
        };
        let Some(Node::Form(Form::State, decl)) = ch.first() else {
            return err(node, "prog(...) starts with state(...)");
        };
        let mut states = Vec::new();
        for d in decl {
            match d {
                Node::Op(Op::Sym(s)) if s.is_state() => states.push(*s),
                other => return err(other, "only m, v, u and s can be state"),
            }
        }
        let mut b = Builder {
            slots: Vec::new(),
            activation: false,
            states: states.clone(),
        };
        let mut stmts = Vec::new();
        for st in &ch[1..] {
            match st {
                Node::Form(Form::Assign, p) if p.len() == 2 => {
                    let k = match &p[0] {
                        Node::Op(Op::Sym(s)) => states.iter().position(|x| x == s),
                        _ => None,
                    };
                    let Some(k) = k else {
                        return err(st, "assign's target must be declared state");
                    };
                    let value = b.tensor(&p[1])?;
                    stmts.push(match value {
                        T::Interp(a, rest, c) if *a == T::Sym(TSym::State(k)) => {
                            // c*m + (1-c)*rest = m + (1-c)*(rest - m).
                            let one_minus = S::Bin(
                                Bin::Sub,
                                Box::new(S::Const(1.0)),
                                Box::new(b.slots[c].clone()),
                            );
                            let w = b.slot(one_minus);
                            Stmt::Lerp(k, *rest, w)
                        }
                        v => Stmt::Assign(k, v),
                    });
                }
                Node::Form(Form::Step, p) if p.len() == 1 => {
                    stmts.push(Stmt::Step(b.tensor(&p[0])?))
                }
                other => return err(other, "statements are assign(...) and step(...)"),
            }
        }
        if stmts.iter().filter(|s| matches!(s, Stmt::Step(_))).count() != 1 {
            return err(node, "an update rule has exactly one step(...)");
        }
        // Greatest fixpoint: a state is never negative if every value assigned to it is not,
        // given the states believed so (all start at zero).
        let mut nonneg = vec![true; states.len()];
        loop {
            let mut changed = false;
            for st in &stmts {
                let (k, ok) = match st {
                    Stmt::Assign(k, v) => (*k, v.nonneg(&nonneg, &b.slots)),
                    Stmt::Lerp(k, v, w) => (
                        *k,
                        nonneg[*k] && v.nonneg(&nonneg, &b.slots) && b.slots[*w].unit(),
                    ),
                    Stmt::Step(_) => continue,
                };
                if !ok && nonneg[k] {
                    nonneg[k] = false;
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        Ok(Rule {
            states,
            stmts,
            slots: b.slots,
            nonneg_states: nonneg,
            text: node.to_string(),
        })
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// The state tensors the rule keeps, in declaration order.
    pub fn states(&self) -> &[Sym] {
        &self.states
    }

    /// The scalar slots at step `t` (1-based) with learning rate `lr`.
    fn scalars(&self, t: u64, lr: f64, hyper: &Hyper, out: &mut Vec<f64>) {
        let v = Scalars {
            t: t as f64,
            lr,
            hyper: *hyper,
        };
        out.clear();
        out.extend(self.slots.iter().map(|s| s.eval(&v)));
    }

    /// Updates `w` in place from its gradient `g` and its `states`, with slots `sc`.
    /// Must run without autograd.
    fn apply(&self, w: &mut Tensor, g: &Tensor, states: &mut [Tensor], sc: &[f64]) -> R<()> {
        let mut step: Option<Tensor> = None;
        let n = self.stmts.len();
        for (i, st) in self.stmts.iter().enumerate() {
            let last = i + 1 == n;
            match st {
                // step(mul(s, div(a, b))) as the last statement: w.addcdiv_(a, b * (-1/s)),
                // one fused update as hand-written optimizers do.
                Stmt::Step(T::BinS {
                    op: Bin::Mul,
                    t,
                    slot,
                    ..
                }) if last && sc[*slot] != 0.0 && matches!(**t, T::Bin(Bin::Div, _, _)) => {
                    let T::Bin(Bin::Div, a, b) = &**t else {
                        continue;
                    };
                    let (num, den) = {
                        let env = Env {
                            input: g,
                            w: Some(&*w),
                            states,
                            sc,
                            inplace: true,
                            nonneg_states: &self.nonneg_states,
                        };
                        let den = b.safe_den(&env, &self.slots)?;
                        let den = bin_ts(Bin::Mul, den, -1.0 / sc[*slot], false, true)?;
                        (a.eval(&env, &self.slots)?.owned(), den)
                    };
                    let _ = w.f_addcdiv_(&num, &den)?;
                }
                Stmt::Step(e) => {
                    let v = {
                        let env = Env {
                            input: g,
                            w: Some(&*w),
                            states,
                            sc,
                            inplace: true,
                            nonneg_states: &self.nonneg_states,
                        };
                        e.eval(&env, &self.slots)?
                    };
                    match v {
                        // Applied now when nothing after it can read the old weights.
                        Val::B(t) if last => {
                            let t = t.shallow_clone();
                            let _ = w.f_sub_(&t)?;
                        }
                        Val::B(t) => step = Some(t.f_detach_copy()?),
                        Val::O(t) if last => {
                            let _ = w.f_sub_(&t)?;
                        }
                        Val::O(t) => step = Some(t),
                    }
                }
                Stmt::Assign(k, e) => {
                    let v = {
                        let env = Env {
                            input: g,
                            w: Some(&*w),
                            states,
                            sc,
                            inplace: true,
                            nonneg_states: &self.nonneg_states,
                        };
                        match e.eval(&env, &self.slots)? {
                            Val::O(t) => Ok(t),
                            Val::B(t) => Err(t.shallow_clone()),
                        }
                    };
                    match v {
                        Ok(t) => states[*k] = t,
                        Err(src) => {
                            states[*k].f_copy_(&src)?;
                        }
                    }
                }
                Stmt::Lerp(k, e, wslot) => {
                    let v = {
                        let env = Env {
                            input: g,
                            w: Some(&*w),
                            states,
                            sc,
                            inplace: true,
                            nonneg_states: &self.nonneg_states,
                        };
                        e.eval(&env, &self.slots)?.owned()
                    };
                    let _ = states[*k].f_lerp_(&v, sc[*wslot])?;
                }
            }
        }
        if let Some(s) = step {
            let _ = w.f_sub_(&s)?;
        }
        Ok(())
    }
}

/// Why an update rule cannot be made an optimizer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OptimizerError {
    /// The hyperparameters fail [`Hyper::check`], which says why.
    #[error(transparent)]
    Hyper(#[from] archsmith::train::program::HyperError),
}

/// An optimizer that runs an update rule on a set of parameter tensors.
pub struct ProgramOptimizer {
    rule: Rule,
    vars: Vec<Tensor>,
    states: Vec<Vec<Tensor>>,
    pub hyper: Hyper,
    /// Steps taken so far; `t` of the next step is `steps + 1`.
    pub steps: u64,
    sc: Vec<f64>,
}

impl ProgramOptimizer {
    /// An optimizer over `vars` (e.g. `VarStore::trainable_variables`), state at zero.
    pub fn new(
        rule: Rule,
        vars: Vec<Tensor>,
        hyper: Hyper,
    ) -> Result<ProgramOptimizer, OptimizerError> {
        hyper.check().map_err(OptimizerError::Hyper)?;
        let states = vars
            .iter()
            .map(|v| {
                rule.states
                    .iter()
                    .map(|_| v.zeros_like().detach())
                    .collect()
            })
            .collect();
        Ok(ProgramOptimizer {
            rule,
            vars,
            states,
            hyper,
            steps: 0,
            sc: Vec::new(),
        })
    }

    pub fn zero_grad(&mut self) {
        for v in &mut self.vars {
            v.zero_grad();
        }
    }

    /// One update of every parameter with a gradient, at learning rate `lr`.
    pub fn step(&mut self, lr: f64) -> Result<(), TchError> {
        self.steps += 1;
        self.rule.scalars(self.steps, lr, &self.hyper, &mut self.sc);
        let rule = &self.rule;
        let sc = &self.sc;
        tch::no_grad(|| -> R<()> {
            for (v, st) in self.vars.iter_mut().zip(self.states.iter_mut()) {
                let g = v.grad();
                if !g.defined() {
                    continue;
                }
                let mut w = v.shallow_clone();
                rule.apply(&mut w, &g, st, sc)?;
            }
            Ok(())
        })
    }

    /// Scales gradients so that their global norm is at most `max`.
    pub fn clip_grad_norm(&mut self, max: f64) -> Result<(), TchError> {
        clip_grad_norm(&self.vars, max)
    }
}

impl Step for ProgramOptimizer {
    fn zero_grad(&mut self) {
        ProgramOptimizer::zero_grad(self)
    }

    fn clip_grad_norm(&mut self, max: f64) -> Result<(), TchError> {
        ProgramOptimizer::clip_grad_norm(self, max)
    }

    fn step(&mut self, lr: f64) -> Result<(), TchError> {
        ProgramOptimizer::step(self, lr)
    }
}

/// Scales the gradients of `vars` so that their global L2 norm is at most `max`.
pub fn clip_grad_norm(vars: &[Tensor], max: f64) -> Result<(), TchError> {
    tch::no_grad(|| -> R<()> {
        let mut total = 0.0;
        let grads: Vec<Tensor> = vars
            .iter()
            .map(|v| v.grad())
            .filter(|g| g.defined())
            .collect();
        for g in &grads {
            let n = g.f_norm()?.f_double_value(&[])?;
            total += n * n;
        }
        let norm = total.sqrt();
        if norm > max {
            let scale = max / (norm + 1e-6);
            for g in &grads {
                let mut g = g.shallow_clone();
                let _ = g.f_mul_scalar_(scale)?;
            }
        }
        Ok(())
    })
}

/// A network to train: a forward function over a `VarStore`.
type Forward = Box<dyn Fn(&Tensor, bool) -> Result<Tensor, TchError>>;

/// `l` applied to `x`. Under mixed precision (bf16 `x`) the weights are cast to `x`'s kind at
/// use, as compiled candidates' are: the master weights stay float32.
fn linear(l: &nn::Linear, x: &Tensor) -> Result<Tensor, TchError> {
    if l.ws.kind() == x.kind() {
        return x.f_linear(&l.ws, l.bs.as_ref());
    }
    let kind = x.kind();
    let bs = l.bs.as_ref().map(|b| b.f_to_kind(kind)).transpose()?;
    x.f_linear(&l.ws.f_to_kind(kind)?, bs.as_ref())
}

fn mlp(vs: &nn::VarStore, data: &Data, hidden: &[u64], act: Option<Activation>) -> Forward {
    let root = vs.root();
    let mut layers = Vec::new();
    let mut width = data.input.numel() as i64;
    for (i, &h) in hidden.iter().enumerate() {
        layers.push(nn::linear(&root / i, width, h as i64, Default::default()));
        width = h as i64;
    }
    let head = nn::linear(
        &root / "head",
        width,
        data.classes as i64,
        Default::default(),
    );
    Box::new(move |x: &Tensor, _train: bool| {
        let mut y = x.f_flatten(1, -1)?;
        for l in &layers {
            y = linear(l, &y)?;
            y = match &act {
                Some(a) => a.forward(&y)?,
                None => y.f_relu()?,
            };
        }
        let logits = linear(&head, &y)?;
        // Mixed precision gives float32 logits, as a compiled candidate's head does.
        Ok(match logits.kind() {
            Kind::Float | Kind::Double => logits,
            _ => logits.f_to_kind(Kind::Float)?,
        })
    })
}

/// Why the reference network cannot be built.
#[derive(Debug, thiserror::Error)]
enum ReferenceError {
    /// An activation was to be scored on a candidate architecture.
    #[error("activation functions are evaluated on an MLP reference; a candidate architecture keeps its own activations")]
    ActivationOnCandidate,
    /// The reference's space does not load.
    #[error(transparent)]
    Space(#[from] archsmith::space::SpaceError),
    /// The reference candidate does not validate in its space for the task's input.
    #[error("the reference network is invalid: {}", joined(.diagnostics))]
    Invalid { diagnostics: Vec<Diagnostic> },
    /// The reference candidate does not compile.
    #[error(transparent)]
    Compile(#[from] crate::compile::CompileError),
}

/// Diagnostics on one line, as a failure's message keeps them.
fn joined(d: &[Diagnostic]) -> String {
    d.iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

fn reference_net(
    vs: &nn::VarStore,
    data: &Data,
    cfg: &ProgramEval,
    act: Option<Activation>,
) -> Result<Forward, ReferenceError> {
    match &cfg.reference {
        Reference::Mlp { hidden } => Ok(mlp(vs, data, hidden, act)),
        Reference::Candidate { space, text } => {
            if act.is_some() {
                return Err(ReferenceError::ActivationOnCandidate);
            }
            let space = archsmith::space::Space::load(space)?;
            let (node, _) = space
                .validate_text(text, data.input, &Default::default())
                .map_err(|diagnostics| ReferenceError::Invalid { diagnostics })?;
            let net =
                crate::compile::compile(&vs.root(), &node, data.input, data.classes, cfg.seed)?;
            Ok(Box::new(move |x: &Tensor, train: bool| {
                net.forward(x, train)
            }))
        }
    }
}

/// Held while seeding torch's generator and drawing the reference network's weights, so that
/// concurrent evaluations (tests, workers) draw the same weights for the same seed.
static INIT_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// One of tch's optimizers (for activations) with the gradients clipped by
/// [`clip_grad_norm`], as update rules' are: both kinds of program are scored under the same
/// clipping (tch's own `clip_grad_norm` sums in float32 and rounds differently).
struct Builtin {
    opt: nn::Optimizer,
    vars: Vec<Tensor>,
}

impl Step for Builtin {
    fn zero_grad(&mut self) {
        self.opt.zero_grad();
    }

    fn clip_grad_norm(&mut self, max: f64) -> Result<(), TchError> {
        clip_grad_norm(&self.vars, max)
    }

    fn step(&mut self, lr: f64) -> Result<(), TchError> {
        Step::step(&mut self.opt, lr)
    }
}

/// Why the network or the optimizer of a program's training cannot be built.
#[derive(Debug, thiserror::Error)]
enum BuildError {
    #[error(transparent)]
    Program(#[from] ProgramError),
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error(transparent)]
    Optimizer(#[from] OptimizerError),
    #[error(transparent)]
    Torch(#[from] TchError),
}

/// Builds the network and its optimizer under a fresh store.
type Build<'a> = &'a dyn Fn(&nn::VarStore) -> Result<(Forward, Box<dyn Step>), BuildError>;

/// Trains one network with one learning rate through the shared loop; failures are kept in
/// the result.
fn fit(
    program: &Node,
    data: &Data,
    cfg: &ProgramEval,
    recipe: &Recipe,
    device: Device,
    build: Build<'_>,
) -> TrainResult {
    let start = Instant::now();
    let res = TrainResult {
        candidate: program.to_string(),
        hash: program.hash_hex(),
        task: data.name.clone(),
        metric: "accuracy".into(),
        score: None,
        test_score: None,
        curve: Vec::new(),
        params: 0,
        flops: 0,
        steps: 0,
        wall_seconds: 0.0,
        steps_per_second: 0.0,
        device: device_name(device),
        seed: cfg.seed,
        stopped_early: false,
        failure: None,
        recipe: recipe.clone(),
    };
    trainer::guarded(res, start, recipe, |res| {
        let vs = nn::VarStore::new(device);
        let (net, mut opt) = {
            let _guard = INIT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            tch::manual_seed(cfg.seed as i64);
            build(&vs).map_err(|e| Failure {
                reason: FailureReason::Compile,
                message: e.to_string(),
            })?
        };
        res.params = count_params(&vs);
        let opts = Fit {
            recipe,
            seed: cfg.seed,
            device,
            divergence: Divergence::Explode(cfg.explode),
        };
        trainer::fit(&net, opt.as_mut(), data, &opts, &mut Quiet, res, start)
    })
}

/// Per learning rate of the grid: its score, or why it failed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GridPoint {
    pub lr: f64,
    pub score: Option<f64>,
    pub valid_loss: Option<f64>,
    pub failure: Option<Failure>,
}

/// Trains once per learning rate and keeps the best by validation score (then loss); when
/// every learning rate fails, the result fails naming each reason.
fn over_grid(
    lrs: &[f64],
    recipe: &Recipe,
    mut one: impl FnMut(&Recipe) -> TrainResult,
) -> (TrainResult, Vec<GridPoint>) {
    let mut grid = Vec::new();
    let mut best: Option<TrainResult> = None;
    let mut last = None;
    for &lr in lrs {
        let r = Recipe {
            lr,
            ..recipe.clone()
        };
        let res = one(&r);
        grid.push(GridPoint {
            lr,
            score: res.score,
            valid_loss: res.curve.last().map(|e| e.valid_loss),
            failure: res.failure.clone(),
        });
        let key = |t: &TrainResult| {
            (
                t.score.unwrap_or(f64::NEG_INFINITY),
                -t.curve.last().map_or(f64::INFINITY, |e| e.valid_loss),
            )
        };
        if res.ok() && best.as_ref().is_none_or(|b| key(&res) > key(b)) {
            best = Some(res);
        } else {
            last = Some(res);
        }
    }
    let res = match (best, last) {
        (Some(b), _) => b,
        (None, Some(mut l)) => {
            let reasons: Vec<String> = grid
                .iter()
                .map(|g| {
                    format!(
                        "lr {:e}: {}",
                        g.lr,
                        g.failure.as_ref().map_or("?", |f| f.message.as_str())
                    )
                })
                .collect();
            if let Some(f) = &mut l.failure {
                f.message = format!("every learning rate failed: {}", reasons.join("; "));
            }
            l
        }
        (None, None) => unreachable_empty(),
    };
    (res, grid)
}

fn unreachable_empty() -> TrainResult {
    // `lrs` is never empty: callers fill in the default grid.
    TrainResult {
        candidate: String::new(),
        hash: String::new(),
        task: String::new(),
        metric: "accuracy".into(),
        score: None,
        test_score: None,
        curve: Vec::new(),
        params: 0,
        flops: 0,
        steps: 0,
        wall_seconds: 0.0,
        steps_per_second: 0.0,
        device: String::new(),
        seed: 0,
        stopped_early: false,
        failure: Some(Failure {
            reason: FailureReason::Runtime,
            message: "no learning rate to try".into(),
        }),
        recipe: Recipe::default(),
    }
}

/// Scores a validated activation function: the reference MLP trained with it after every
/// hidden layer, with the recipe's optimizer, over the learning-rate grid.
pub fn evaluate_activation_grid(
    node: &Node,
    data: &Data,
    task_recipe: &Recipe,
    cfg: &ProgramEval,
    device: Device,
) -> (TrainResult, Vec<GridPoint>) {
    let recipe = cfg.recipe.clone().unwrap_or_else(|| task_recipe.clone());
    let lrs = if cfg.lrs.is_empty() {
        vec![recipe.lr]
    } else {
        cfg.lrs.clone()
    };
    let act = Activation::compile(node);
    over_grid(&lrs, &recipe, |r| {
        fit(node, data, cfg, r, device, &|vs| {
            let net = reference_net(vs, data, cfg, Some(act.clone()?))?;
            let opt = trainer::optimizer(vs, r)?;
            let vars = vs.trainable_variables();
            Ok((net, Box::new(Builtin { opt, vars }) as Box<dyn Step>))
        })
    })
}

/// Scores a validated update rule: the reference network trained with it in place of the
/// optimizer, the learning rate tuned over the grid.
pub fn evaluate_optimizer_grid(
    node: &Node,
    data: &Data,
    task_recipe: &Recipe,
    cfg: &ProgramEval,
    device: Device,
) -> (TrainResult, Vec<GridPoint>) {
    let recipe = cfg.recipe.clone().unwrap_or_else(|| task_recipe.clone());
    let lrs = if cfg.lrs.is_empty() {
        OPTIMIZER_LRS.to_vec()
    } else {
        cfg.lrs.clone()
    };
    over_grid(&lrs, &recipe, |r| {
        fit(node, data, cfg, r, device, &|vs| {
            let rule = Rule::compile(node)?;
            let net = reference_net(vs, data, cfg, None)?;
            let opt = ProgramOptimizer::new(rule, vs.trainable_variables(), cfg.hyper)?;
            Ok((net, Box::new(opt) as Box<dyn Step>))
        })
    })
}

/// [`evaluate_activation_grid`] without the per-learning-rate detail.
pub fn evaluate_activation(
    node: &Node,
    data: &Data,
    task_recipe: &Recipe,
    cfg: &ProgramEval,
    device: Device,
) -> TrainResult {
    evaluate_activation_grid(node, data, task_recipe, cfg, device).0
}

/// [`evaluate_optimizer_grid`] without the per-learning-rate detail.
pub fn evaluate_optimizer(
    node: &Node,
    data: &Data,
    task_recipe: &Recipe,
    cfg: &ProgramEval,
    device: Device,
) -> TrainResult {
    evaluate_optimizer_grid(node, data, task_recipe, cfg, device).0
}
