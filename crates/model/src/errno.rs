//! System-call errors: include/uapi/asm-generic/errno-base.h.

use serde::Serialize;
use thiserror::Error;

/// An errno a modelled system call returns.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Errno {
    #[error("ENOMEM")]
    Enomem,
    #[error("EINVAL")]
    Einval,
    #[error("EBUSY")]
    Ebusy,
    #[error("EACCES")]
    Eacces,
    /// A bad address (get_user_pages() of an unmapped or inaccessible range).
    #[error("EFAULT")]
    Efault,
    /// No page there (a move_pages(2) status).
    #[error("ENOENT")]
    Enoent,
    /// A page is already in the page cache there (add_to_page_cache()).
    #[error("EEXIST")]
    Eexist,
    /// No free hugetlb page (alloc_huge_page()).
    #[error("ENOSPC")]
    Enospc,
}
