//! Byte-level primitives on top of nom, with a unit error: running short is the only failure,
//! and each caller turns it into the error its RFC prescribes.

use nom::bytes::complete::take as nom_take;
use nom::number::complete::{be_u16, be_u32, be_u8};
use nom::Parser;

/// The input ended before the field did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Short;

pub(crate) type W<'a, T> = Result<(&'a [u8], T), Short>;

#[inline]
pub(crate) fn u8_(i: &[u8]) -> W<'_, u8> {
    be_u8::<&[u8], ()>(i).map_err(|_| Short)
}

#[inline]
pub(crate) fn u16_(i: &[u8]) -> W<'_, u16> {
    be_u16::<&[u8], ()>(i).map_err(|_| Short)
}

#[inline]
pub(crate) fn u32_(i: &[u8]) -> W<'_, u32> {
    be_u32::<&[u8], ()>(i).map_err(|_| Short)
}

#[inline]
pub(crate) fn take(i: &[u8], n: usize) -> W<'_, &[u8]> {
    nom_take::<usize, &[u8], ()>(n).parse(i).map_err(|_| Short)
}
